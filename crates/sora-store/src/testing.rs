//! Test helpers shared with other crates' tests (feature `testing`).
//!
//! [`TestPostgres`] gives each test its own fresh PostgreSQL database and drops it afterwards.
//! The server is the one `DATABASE_URL` names (it must be `postgres://...`), else the local one
//! at `127.0.0.1:5432` (user `postgres`); where no server answers there, a throwaway cluster is
//! started from the installed PostgreSQL binaries for the life of the test process. Where
//! PostgreSQL is not installed at all, it fails and says how to install it: nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::OnceCell;

/// The server used when `DATABASE_URL` is not set.
pub const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh, uniquely named database, dropped (`WITH (FORCE)`) on drop or by
/// [`TestPostgres::cleanup`].
#[derive(Debug)]
pub struct TestPostgres {
    /// The URL of the new database.
    pub url: String,
    /// The URL of the server's maintenance database, used to create and drop it.
    admin_url: String,
    name: String,
    dropped: bool,
}

/// The server the tests of this process use, found (or started) once.
static SERVER: OnceCell<String> = OnceCell::const_new();

impl TestPostgres {
    /// Creates a fresh database. Panics with a message saying what to do when there is no
    /// PostgreSQL to use.
    pub async fn new() -> Self {
        match Self::try_new().await {
            Ok(db) => db,
            Err(e) => panic!("no PostgreSQL for the tests: {e}"),
        }
    }

    /// Creates a fresh database, or says why it cannot.
    pub async fn try_new() -> Result<Self, String> {
        let admin_url = SERVER.get_or_try_init(find_server).await?.clone();
        let name = format!("sora_test_{}", ulid::Ulid::new().to_string().to_lowercase());
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .map_err(|e| format!("cannot connect to the test server: {e}"))?;
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .map_err(|e| format!("cannot create database {name}: {e}"))?;
        let _ = conn.close().await;
        let url = with_database(&admin_url, &name)?;
        Ok(Self {
            url,
            admin_url,
            name,
            dropped: false,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database now (disconnecting whoever is still connected).
    pub async fn cleanup(mut self) {
        self.dropped = true;
        if let Err(e) = drop_database(&self.admin_url, &self.name).await {
            eprintln!("warning: cannot drop test database {}: {e}", self.name);
        }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside a runtime, where blocking on another future is not allowed: do
        // it on a thread of its own with a small runtime.
        let joined = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(drop_database(&admin_url, &name))
        })
        .join();
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: cannot drop test database {}: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), String> {
    let mut conn = PgConnection::connect(admin_url)
        .await
        .map_err(|e| e.to_string())?;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .await
    .map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(())
}

fn with_database(url: &str, name: &str) -> Result<String, String> {
    let mut parsed = url::Url::parse(url).map_err(|e| format!("invalid server URL: {e}"))?;
    parsed.set_path(&format!("/{name}"));
    Ok(parsed.to_string())
}

async fn answers(url: &str) -> bool {
    match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(url)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            true
        }
        _ => false,
    }
}

async fn find_server() -> Result<String, String> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(
                "DATABASE_URL must name a PostgreSQL server (postgres://...) for these tests"
                    .into(),
            );
        }
        if !answers(&url).await {
            return Err(format!(
                "the PostgreSQL server DATABASE_URL names ({}) does not answer",
                crate::error::redact_url(&url)
            ));
        }
        return Ok(url);
    }
    if answers(DEFAULT_SERVER_URL).await {
        return Ok(DEFAULT_SERVER_URL.to_owned());
    }
    start_throwaway_cluster().await
}

/// Starts a throwaway PostgreSQL cluster from the installed binaries (as the `postgres` user
/// when running as root), in a temporary directory, on a free loopback port, trusting local
/// connections. It runs until this process ends. Returns the URL of its `postgres` database.
/// Fails, saying `apt-get install postgresql`, where PostgreSQL is not installed.
pub async fn start_throwaway_cluster() -> Result<String, String> {
    let (url, dir) = tokio::task::spawn_blocking(spawn_cluster)
        .await
        .map_err(|e| format!("starting a cluster panicked: {e}"))??;
    for _ in 0..120 {
        if answers(&url).await {
            return Ok(url);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!(
        "the throwaway PostgreSQL cluster in {} did not start; see its log there",
        dir.display()
    ))
}

/// The newest installed PostgreSQL's `bin` directory.
fn installed_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Starts the cluster's server for the life of this process (a watcher stops it and deletes
/// its directory when the process is gone). Returns its URL (it may take a moment to answer) and its directory.
fn spawn_cluster() -> Result<(String, PathBuf), String> {
    let bin = installed_bin().ok_or(
        "no PostgreSQL server answers at 127.0.0.1:5432 and PostgreSQL is not installed; \
         install it with `apt-get install postgresql` (or set DATABASE_URL to a server)",
    )?;
    let dir = std::env::temp_dir().join(format!(
        "sora-pg-{}-{}",
        std::process::id(),
        ulid::Ulid::new().to_string().to_lowercase()
    ));
    let data = dir.join("data");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))?;
    // PostgreSQL refuses to run as root: run it as `postgres` when we are root.
    let as_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if as_root {
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir))?;
    }
    let user_cmd = |program: &Path| -> Command {
        if as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    };
    run(user_cmd(&bin.join("initdb"))
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "-D"])
        .arg(&data))?;
    let postgres = bin.join("postgres");
    let script = format!(
        "{postgres} -D {data} -p {port} -c listen_addresses=127.0.0.1 -k {dir} \
         -c fsync=off -c max_connections=300 >{dir}/log 2>&1 & pg=$!; \
         while [ -d /proc/{me} ]; do sleep 1; done; kill $pg; wait $pg; rm -rf {dir}",
        postgres = postgres.display(),
        data = data.display(),
        dir = dir.display(),
        me = std::process::id(),
    );
    let mut watcher = if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", &script]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    };
    watcher
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start postgres: {e}"))?;
    Ok((
        format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        dir,
    ))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
