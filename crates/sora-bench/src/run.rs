//! One benchmark run: prepares a fresh database, starts sora-server (PostgreSQL, built-in
//! emulator, no workers) and the baselines, runs the scenarios in priority order and reports.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::Rng;
use secrecy::ExposeSecret;
use sora_openai::webhook::{WebhookSecret, WebhookSigner};
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::load::{self, LoadResult};
use crate::pgbench::PgbenchRun;
use crate::procfs::{self, CpuSnapshot, RssSampler};
use crate::procs::{self, Proc};
use crate::report::{Report, Row, Verdict};
use crate::stats::{self, Latency};
use crate::ws::{Fleet, Ramp, Trigger};

/// The scenarios, in priority order (`fanout` includes the connection ramp and idle sockets).
pub const SCENARIOS: [&str; 5] = ["create", "webhook", "fanout", "download", "startup"];

/// What to run and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// A few seconds per scenario, no budgets judged.
    pub smoke: bool,
    /// The `sora-server` binary.
    pub server_bin: PathBuf,
    /// This binary (it serves the bare WebSocket baseline as `sora-bench ws-baseline`).
    pub bench_bin: PathBuf,
    /// The repository root (for `bench/pgbench/*.sql` and `bench/nginx.conf`).
    pub repo: PathBuf,
    /// Where logs, files and the JSON report go (`target/bench`).
    pub out_dir: PathBuf,
    /// The PostgreSQL server, without a database name (`postgres://postgres@127.0.0.1:5432`).
    pub pg_url: String,
    /// The database the run creates afresh (dropped first).
    pub database: String,
    /// Only these scenarios (all when empty); see [`SCENARIOS`].
    pub only: Vec<String>,
}

/// The sizes of a run.
#[derive(Debug, Clone, Copy)]
struct Params {
    concurrency: usize,
    create: Duration,
    half_rate: Duration,
    webhook: Duration,
    fanout_small: usize,
    fanout_large: usize,
    rounds: usize,
    ramp_concurrency: usize,
    download: Duration,
    startup_runs: usize,
}

impl Params {
    fn of(smoke: bool, fd_limit: Option<u64>) -> Self {
        if smoke {
            return Self {
                concurrency: 16,
                create: Duration::from_secs(3),
                half_rate: Duration::from_secs(2),
                webhook: Duration::from_secs(3),
                fanout_small: 100,
                fanout_large: 300,
                rounds: 3,
                ramp_concurrency: 32,
                download: Duration::from_secs(2),
                startup_runs: 1,
            };
        }
        // Each client and each server connection is a descriptor; leave room for the rest.
        let large = match fd_limit {
            Some(n) if n < 11_000 => (n.saturating_sub(1_000) as usize).max(1_000),
            _ => 10_000,
        };
        Self {
            concurrency: 16,
            create: Duration::from_secs(20),
            half_rate: Duration::from_secs(10),
            webhook: Duration::from_secs(20),
            fanout_small: 1_000,
            fanout_large: large,
            rounds: 20,
            ramp_concurrency: 64,
            download: Duration::from_secs(8),
            startup_runs: 5,
        }
    }
}

/// The soft limit on open files of this process (and so of its children).
fn fd_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or("?".into(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1048576.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!(
        "{cpus} CPUs, {mem} RAM, Linux {kernel}, open-file limit {}",
        fd_limit().map_or("?".into(), |n| n.to_string())
    )
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Ctx {
    opts: Options,
    p: Params,
    http: reqwest::Client,
    db_url: String,
    storage_dir: PathBuf,
    key: String,
    pool: PgPool,
    webhook_secret: WebhookSecret,
    server: Option<Proc>,
    base: String,
    rows: Vec<Row>,
    failures: Vec<String>,
}

/// Runs the benchmark and answers its report (also printed and written as JSON).
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let started_at = chrono::Utc::now();
    let p = Params::of(opts.smoke, fd_limit());
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("cannot create {}", opts.out_dir.display()))?;
    let out_dir = std::fs::canonicalize(&opts.out_dir)?;
    let storage_dir = out_dir.join("storage");
    let _ = std::fs::remove_dir_all(&storage_dir);
    std::fs::create_dir_all(&storage_dir)?;

    // A fresh database.
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{}/postgres", opts.pg_url))
        .await
        .with_context(|| format!("cannot reach PostgreSQL at {}", opts.pg_url))?;
    if opts.database.is_empty()
        || !opts
            .database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        bail!("the database name must be letters, digits and underscores");
    }
    // The name is checked above: letters, digits and underscores only.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        opts.database
    )))
    .execute(&admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{}\"",
        opts.database
    )))
    .execute(&admin)
    .await?;
    admin.close().await;
    let db_url = format!("{}/{}", opts.pg_url, opts.database);
    let key = procs::create_api_key(&opts.server_bin, &db_url, "bench").await?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&db_url)
        .await?;

    let http = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        // Under the servers' keep-alive (actix-web: 5 s): a connection left idle while another
        // subject is measured is dropped here before the server closes it, instead of being
        // reused as the server closes it ("error sending request" in a row that follows).
        .pool_idle_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut ctx = Ctx {
        opts: Options {
            out_dir: out_dir.clone(),
            ..opts
        },
        p,
        http,
        db_url,
        storage_dir,
        key,
        pool,
        webhook_secret: WebhookSecret::generate(),
        server: None,
        base: String::new(),
        rows: Vec::new(),
        failures: Vec::new(),
    };
    let (server, base) = ctx.start_server("server").await?;
    ctx.server = Some(server);
    ctx.base = base;

    for name in SCENARIOS {
        if !ctx.selected(name) {
            continue;
        }
        eprintln!("==> {name}");
        let r = match name {
            "create" => ctx.create().await,
            "webhook" => ctx.webhook().await,
            "fanout" => ctx.fanout().await,
            "download" => ctx.download().await,
            _ => ctx.startup().await,
        };
        if let Err(e) = r {
            eprintln!("    {name} could not run: {e:#}");
            ctx.failures.push(format!("{name}: {e:#}"));
        }
    }
    if let Some(server) = ctx.server.take() {
        if let Some(m) = procfs::memory(server.pid()) {
            eprintln!(
                "sora-server VmHWM over the whole run: {:.1} MiB",
                mib(m.hwm_kib)
            );
        }
        server.stop(Duration::from_secs(5)).await;
    }
    ctx.pool.close().await;

    let report = Report {
        started_at: started_at.to_rfc3339(),
        smoke: ctx.opts.smoke,
        machine: machine(),
        rows: std::mem::take(&mut ctx.rows),
        failures: std::mem::take(&mut ctx.failures),
    };
    let name = if report.smoke { "smoke" } else { "bench" };
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(out_dir.join(format!("{name}.json")), &json)?;
    std::fs::write(
        out_dir.join(format!(
            "{name}-{}.json",
            started_at.format("%Y%m%dT%H%M%SZ")
        )),
        &json,
    )?;
    std::fs::write(
        out_dir.join(format!("{name}.md")),
        crate::report::table(&report.rows),
    )?;
    Ok(report)
}

/// A create body: the smallest valid request (prompt only; model, size and seconds default).
const CREATE_BODY: &str =
    r#"{"prompt":"A calico cat playing a grand piano on a dimly lit stage, slow dolly in"}"#;

impl Ctx {
    fn selected(&self, name: &str) -> bool {
        self.opts.only.is_empty() || self.opts.only.iter().any(|o| o == name)
    }

    fn judge(&self, ok: bool) -> Verdict {
        if self.opts.smoke {
            Verdict::None
        } else {
            Verdict::of(ok)
        }
    }

    fn server_pid(&self) -> u32 {
        self.server.as_ref().map_or(0, |s| s.pid())
    }

    fn server_env(&self, database_url: &str, port: u16, storage: &Path) -> HashMap<String, String> {
        let mut env = HashMap::new();
        env.insert("DATABASE_URL".into(), database_url.to_owned());
        env.insert("SORA_BIND".into(), format!("127.0.0.1:{port}"));
        env.insert("SORA_PUBLIC_URL".into(), format!("http://127.0.0.1:{port}"));
        env.insert(
            "SORA_STORAGE_URL".into(),
            format!("file://{}", storage.display()),
        );
        env.insert("SORA_EMULATOR_DURATION_MS".into(), "1".into());
        env.insert(
            "OPENAI_WEBHOOK_SECRET".into(),
            self.webhook_secret.to_whsec().expose_secret().to_owned(),
        );
        env.insert(
            "RUST_LOG".into(),
            std::env::var("SORA_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        );
        env
    }

    /// Starts a PostgreSQL-backed server without workers (the scenarios drive every change
    /// themselves, so no scenario's load spills into the next).
    async fn start_server(&self, label: &str) -> anyhow::Result<(Proc, String)> {
        let port = procs::free_port()?;
        let env = self.server_env(&self.db_url, port, &self.storage_dir);
        let log = self.opts.out_dir.join(format!("{label}.log"));
        let t = Instant::now();
        let mut proc = Proc::spawn(
            "sora-server",
            &self.opts.server_bin,
            &["serve", "--no-workers"],
            &env,
            &log,
        )?;
        let base = format!("http://127.0.0.1:{port}");
        proc.wait_ready(
            &self.http,
            &format!("{base}/readyz"),
            t,
            Duration::from_secs(30),
        )
        .await
        .with_context(|| format!("see {}", log.display()))?;
        Ok((proc, base))
    }

    fn create_op(
        &self,
        base: &str,
    ) -> impl Fn(u64) -> futures::future::BoxFuture<'static, Result<u64, String>> + Send + Sync + 'static
    {
        let http = self.http.clone();
        let url = format!("{base}/api/generate");
        let key = self.key.clone();
        move |_| {
            let http = http.clone();
            let url = url.clone();
            let key = key.clone();
            Box::pin(async move {
                let r = http
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .header("idempotency-key", ulid::Ulid::new().to_string())
                    .body(CREATE_BODY)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = r.status();
                let body = r.bytes().await.map_err(|e| e.to_string())?;
                if status != reqwest::StatusCode::ACCEPTED {
                    return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
                }
                Ok(0)
            })
        }
    }

    fn pgbench(&self, script: &str, duration: Duration, rate: Option<f64>) -> PgbenchRun {
        PgbenchRun {
            script: self.opts.repo.join("bench/pgbench").join(script),
            clients: self.p.concurrency as u32,
            threads: 2,
            duration,
            rate,
            log_prefix: self.opts.out_dir.join(format!(
                "pgbench-{}{}",
                script.trim_end_matches(".sql"),
                if rate.is_some() { "-rate" } else { "" }
            )),
            database_url: self.db_url.clone(),
        }
    }

    fn load_row(
        &self,
        scenario: &str,
        subject: &str,
        r: &LoadResult,
        unit: &str,
        sampler: Option<&RssSampler>,
    ) -> Row {
        let mut row = Row::new(scenario, subject);
        row.throughput = Some(if unit == "MB/s" {
            r.megabytes_per_sec()
        } else {
            r.rate()
        });
        row.unit = unit.into();
        row.latency = Some(Latency::of(&r.latency));
        row.peak_rss_mib = sampler.map(|s| mib(s.peak_kib(self.server_pid())));
        if let Some(n) = r.error_note() {
            row.note(n);
        }
        row
    }

    /// `POST /api/generate` at fixed concurrency, then at half its peak rate; `pgbench` with the
    /// same inserts the same two ways.
    async fn create(&mut self) -> anyhow::Result<()> {
        let c = self.p.concurrency;
        let sampler = RssSampler::start(self.server_pid(), Duration::from_millis(20));
        let cpu0 = CpuSnapshot::take(self.server_pid());
        let server =
            load::closed_loop(c, self.p.create, u64::MAX, self.create_op(&self.base)).await;
        let cpu1 = CpuSnapshot::take(self.server_pid());
        if server.ok == 0 {
            bail!(
                "no create succeeded: {}",
                server.first_error.unwrap_or_default()
            );
        }
        let mut row = self.load_row(
            &format!("create c={c}"),
            "sora-server",
            &server,
            "req/s",
            Some(&sampler),
        );
        drop(sampler);
        row.note(cpu1.per_op_since(&cpu0, server.ok, "sora-server", "load generator"));

        let cpu0 = CpuSnapshot::take(self.server_pid());
        let pg = match self.pgbench("create.sql", self.p.create, None).run().await {
            Ok(r) => Some(r),
            Err(e) => {
                self.baseline_missing("create", &e.to_string())?;
                None
            }
        };
        let budget = "≥ 0.60 × pgbench";
        row.budget = budget.into();
        if let Some(pg) = &pg {
            let ratio = server.rate() / pg.tps;
            row.ratio = Some(ratio);
            row.verdict = self.judge(ratio >= 0.60);
        }
        self.rows.push(row);
        if let Some(pg) = &pg {
            let mut b = Row::new(format!("create c={c}"), "pgbench (same inserts)");
            b.throughput = Some(pg.tps);
            b.unit = "tx/s".into();
            b.latency = Some(Latency::of(&pg.latency));
            b.note(CpuSnapshot::take(self.server_pid()).per_op_since(
                &cpu0,
                pg.latency.len(),
                "pgbench",
                "pgbench",
            ));
            self.rows.push(b);
        }

        // Half the peak rate, open loop.
        let rate = server.rate() / 2.0;
        let sampler = RssSampler::start(self.server_pid(), Duration::from_millis(20));
        let half = load::open_loop(rate, self.p.half_rate, 512, self.create_op(&self.base)).await;
        let mut row = self.load_row(
            &format!("create @ ½ peak ({rate:.0}/s)"),
            "sora-server",
            &half,
            "req/s",
            Some(&sampler),
        );
        let p99 = Latency::of(&half.latency).p99_ms;
        row.budget = "p99 ≤ 10 ms".into();
        row.verdict = self.judge(p99 <= 10.0 && half.errors == 0);
        let pg_half = match &pg {
            Some(pg) => self
                .pgbench("create.sql", self.p.half_rate, Some(pg.tps / 2.0))
                .run()
                .await
                .ok(),
            None => None,
        };
        if let Some(h) = &pg_half {
            let base_p99 = Latency::of(&h.latency).p99_ms;
            row.ratio = Some(p99 / base_p99.max(1e-3));
            row.note("ratio = p99 / pgbench p99 at its own half rate");
        }
        self.rows.push(row);
        if let (Some(h), Some(pg)) = (&pg_half, &pg) {
            let mut b = Row::new(
                format!("create @ ½ peak ({:.0}/s)", pg.tps / 2.0),
                "pgbench (same inserts)",
            );
            b.throughput = Some(h.tps);
            b.unit = "tx/s".into();
            b.latency = Some(Latency::of(&h.latency));
            self.rows.push(b);
        }
        Ok(())
    }

    /// In a smoke run a missing baseline tool is a remark; in a full run it is an error.
    fn baseline_missing(&mut self, scenario: &str, why: &str) -> anyhow::Result<()> {
        if self.opts.smoke {
            let mut r = Row::new(scenario, "baseline");
            r.note(format!("baseline skipped: {why}"));
            self.rows.push(r);
            Ok(())
        } else {
            bail!("the baseline could not run: {why}")
        }
    }

    /// Signed `POST /api/webhook/video-events`, unique ids, at fixed concurrency.
    async fn webhook(&mut self) -> anyhow::Result<()> {
        let c = self.p.concurrency;
        let signer = Arc::new(WebhookSigner::new(self.webhook_secret.clone()));
        let http = self.http.clone();
        let url = format!("{}/api/webhook/video-events", self.base);
        let op = move |_n: u64| {
            let http = http.clone();
            let url = url.clone();
            let signer = signer.clone();
            async move {
                let u = ulid::Ulid::new().to_string().to_lowercase();
                let ts = chrono::Utc::now().timestamp();
                let body = format!(
                    r#"{{"id":"evt_{u}","object":"event","created_at":{ts},"type":"video.completed","data":{{"id":"video_{u}"}}}}"#
                );
                let msg_id = format!("msg_{u}");
                let sig = signer.sign(&msg_id, ts, body.as_bytes());
                let r = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", msg_id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", sig)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = r.status();
                let body = r.bytes().await.map_err(|e| e.to_string())?;
                if status != reqwest::StatusCode::OK {
                    return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
                }
                Ok(0)
            }
        };
        let sampler = RssSampler::start(self.server_pid(), Duration::from_millis(20));
        let cpu0 = CpuSnapshot::take(self.server_pid());
        let r = load::closed_loop(c, self.p.webhook, u64::MAX, op).await;
        let cpu1 = CpuSnapshot::take(self.server_pid());
        if r.ok == 0 {
            bail!("no webhook accepted: {}", r.first_error.unwrap_or_default());
        }
        let mut row = self.load_row(
            &format!("webhook c={c}"),
            "sora-server",
            &r,
            "req/s",
            Some(&sampler),
        );
        row.note(cpu1.per_op_since(&cpu0, r.ok, "sora-server", "load generator"));
        row.budget = "≥ 0.60 × pgbench".into();
        // The baseline is the create scenario's pgbench figure when it ran.
        let base = self
            .rows
            .iter()
            .find(|b| b.subject.starts_with("pgbench") && b.scenario.starts_with("create c="))
            .and_then(|b| b.throughput);
        let base = match base {
            Some(b) => Some(b),
            None => match self.pgbench("create.sql", self.p.webhook, None).run().await {
                Ok(pg) => Some(pg.tps),
                Err(e) => {
                    self.baseline_missing("webhook", &e.to_string())?;
                    None
                }
            },
        };
        if let Some(b) = base {
            row.ratio = Some(r.rate() / b);
            row.verdict = self.judge(r.rate() / b >= 0.60);
            row.note("baseline: the create pgbench row");
        }
        self.rows.push(row);
        Ok(())
    }

    /// Creates `n` jobs through the API; answers their ids.
    async fn create_jobs(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let ids = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let http = self.http.clone();
        let url = format!("{}/api/generate", self.base);
        let key = self.key.clone();
        let out = ids.clone();
        let r = load::closed_loop(16, Duration::from_secs(600), n as u64, move |_| {
            let http = http.clone();
            let url = url.clone();
            let key = key.clone();
            let out = out.clone();
            async move {
                let r = http
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(CREATE_BODY)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
                let id = v
                    .get("jobId")
                    .and_then(|j| j.as_str())
                    .ok_or_else(|| format!("no jobId in {v}"))?;
                out.lock().map_err(|e| e.to_string())?.push(id.to_owned());
                Ok(0)
            }
        })
        .await;
        if let Some(e) = r.error_note() {
            bail!("creating {n} jobs: {e}");
        }
        let ids = ids.lock().map_err(|e| anyhow::anyhow!("{e}"))?.clone();
        Ok(ids)
    }

    /// Commits one change (version + 1) to each job, in one transaction; answers the new
    /// version (the same for all: they were created together and nothing else writes them)
    /// and the instant just before the `COMMIT` was sent: the changes become visible, and
    /// their notices are sent, at the commit.
    async fn bump(&self, ids: &[String], progress: i64) -> anyhow::Result<(u64, Instant)> {
        let mut tx = self.pool.begin().await?;
        let versions: Vec<(i64,)> = sqlx::query_as(
            "UPDATE jobs SET version = version + 1, progress = $2, updated_at = now() \
             WHERE id = ANY($1) RETURNING version",
        )
        .bind(ids)
        .bind(progress)
        .fetch_all(&mut *tx)
        .await?;
        let first = versions.first().map(|v| v.0).context("no job updated")?;
        if versions.len() != ids.len() || versions.iter().any(|v| v.0 != first) {
            bail!("the jobs' versions diverged");
        }
        let t0 = Instant::now();
        tx.commit().await?;
        Ok((first as u64, t0))
    }

    /// Opens `clients` subscribers (one job, or one job each) on a server at `base`, then
    /// commits `rounds` changes and times each frame's arrival from just before the `COMMIT`.
    async fn server_fanout(
        &self,
        base: &str,
        clients: usize,
        distinct: bool,
        idle_pid: Option<u32>,
    ) -> anyhow::Result<FanoutOutcome> {
        let ids = if distinct {
            self.create_jobs(clients).await?
        } else {
            self.create_jobs(1).await?
        };
        let ws_base = base.replacen("http://", "ws://", 1);
        let urls = (0..clients)
            .map(|i| {
                let id = if distinct { &ids[i] } else { &ids[0] };
                format!("{ws_base}/api/ws?token={}&jobId={id}", self.key)
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = idle_pid.and_then(procfs::memory);
        let (mut fleet, ramp) = Fleet::open(urls, self.p.ramp_concurrency).await;
        if fleet.is_empty() {
            bail!(
                "no WebSocket client connected: {}",
                ramp.first_error.unwrap_or_default()
            );
        }
        let idle = match (idle_pid, before) {
            (Some(pid), Some(before)) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                procfs::memory(pid).map(|after| (before.rss_kib, after.rss_kib))
            }
            _ => None,
        };
        let mut latency = stats::histogram();
        let mut missed = 0;
        for round in 0..self.p.rounds {
            fleet.drain();
            let (version, t0) = self.bump(&ids, (round as i64 + 1).min(99)).await?;
            let got = fleet
                .collect(
                    version,
                    fleet.len(),
                    t0,
                    Duration::from_secs(10),
                    &mut latency,
                )
                .await;
            missed += fleet.len() - got;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(FanoutOutcome {
            connected: fleet.len(),
            ramp,
            latency,
            missed,
            idle,
        })
    }

    /// The same shape against the bare WebSocket server.
    /// `stack`: `tungstenite` (the bare server) or `actix` (the same relay on actix-ws).
    async fn bare_fanout(
        &self,
        clients: usize,
        stack: &str,
    ) -> anyhow::Result<(FanoutOutcome, Option<f64>)> {
        let port = procs::free_port()?;
        let bind = format!("127.0.0.1:{port}");
        let mut proc = Proc::spawn(
            "ws-baseline",
            &self.opts.bench_bin,
            &["ws-baseline", "--bind", &bind, "--stack", stack],
            &HashMap::new(),
            &self.opts.out_dir.join(format!("ws-baseline-{stack}.log")),
        )?;
        let t = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(&bind).await.is_ok() {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("the bare WebSocket server did not listen");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = &mut proc;
        let url = format!("ws://{bind}/");
        let before = procfs::memory(proc.pid());
        let sampler = RssSampler::start(proc.pid(), Duration::from_millis(20));
        let (mut fleet, ramp) =
            Fleet::open(vec![url.clone(); clients], self.p.ramp_concurrency).await;
        if fleet.is_empty() {
            bail!(
                "no client reached the bare server: {}",
                ramp.first_error.unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = match (before, procfs::memory(proc.pid())) {
            (Some(b), Some(a)) => Some((b.rss_kib, a.rss_kib)),
            _ => None,
        };
        let mut trigger = Trigger::connect(&url)
            .await
            .map_err(|e| anyhow::anyhow!("trigger: {e}"))?;
        let mut latency = stats::histogram();
        let mut missed = 0;
        for round in 0..self.p.rounds {
            fleet.drain();
            let version = round as u64 + 1;
            let t0 = Instant::now();
            trigger
                .send(version)
                .await
                .map_err(|e| anyhow::anyhow!("trigger: {e}"))?;
            let got = fleet
                .collect(
                    version,
                    fleet.len(),
                    t0,
                    Duration::from_secs(10),
                    &mut latency,
                )
                .await;
            missed += fleet.len() - got;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let peak = mib(sampler.peak_kib(proc.pid()));
        let outcome = FanoutOutcome {
            connected: fleet.len(),
            ramp,
            latency,
            missed,
            idle,
        };
        drop(fleet);
        drop(trigger);
        proc.stop(Duration::from_secs(2)).await;
        Ok((outcome, Some(peak)))
    }

    fn fanout_row(
        &self,
        scenario: &str,
        subject: &str,
        o: &FanoutOutcome,
        budget_ms: Option<f64>,
        base: Option<&FanoutOutcome>,
    ) -> Row {
        let mut row = Row::new(scenario, subject);
        let l = Latency::of(&o.latency);
        row.latency = Some(l);
        row.throughput = Some(o.latency.len() as f64);
        row.unit = "frames".into();
        if let Some(ms) = budget_ms {
            row.budget = format!("p99 ≤ {ms:.0} ms, no miss");
            row.verdict = self.judge(l.p99_ms <= ms && o.missed == 0 && o.ramp.failed == 0);
        }
        if let Some(b) = base {
            let bl = Latency::of(&b.latency);
            row.ratio = Some(l.p99_ms / bl.p99_ms.max(1e-3));
        }
        row.note(format!(
            "{} clients × {} rounds, {} missed",
            o.connected, self.p.rounds, o.missed
        ));
        if o.ramp.failed > 0 {
            row.note(format!(
                "{} failed to connect (first: {})",
                o.ramp.failed,
                o.ramp.first_error.as_deref().unwrap_or("?")
            ));
        }
        row
    }

    fn ramp_row(&self, subject: &str, r: &Ramp, budget: bool, base: Option<&Ramp>) -> Row {
        let mut row = Row::new(
            format!(
                "connection ramp ({} conns, {} at once)",
                r.connected + r.failed,
                self.p.ramp_concurrency
            ),
            subject,
        );
        row.throughput = Some(r.rate());
        row.unit = "conn/s".into();
        row.latency = Some(Latency::of(&r.latency));
        if budget {
            row.budget = "≥ 2,000 conn/s".into();
            row.verdict = self.judge(r.rate() >= 2000.0 && r.failed == 0);
        }
        if let Some(b) = base {
            row.ratio = Some(r.rate() / b.rate().max(1e-9));
        }
        if r.failed > 0 {
            row.note(format!(
                "{} failed (first: {})",
                r.failed,
                r.first_error.as_deref().unwrap_or("?")
            ));
        }
        row
    }

    fn idle_row(&self, subject: &str, o: &FanoutOutcome, budget: bool) -> Row {
        let mut row = Row::new(format!("idle sockets ({})", o.connected), subject);
        if let Some((before, after)) = o.idle {
            let per = (after.saturating_sub(before)) as f64 / o.connected.max(1) as f64;
            row.throughput = Some(per);
            row.unit = "KiB/conn".into();
            row.peak_rss_mib = Some(mib(after));
            row.note(format!(
                "RSS {:.1} MiB with no connection, {:.1} MiB with {}",
                mib(before),
                mib(after),
                o.connected
            ));
            if budget {
                row.budget = "≤ 16 KiB/conn".into();
                row.verdict = self.judge(per <= 16.0);
            }
        }
        row
    }

    /// Event fan-out (N clients on one job, N distinct jobs, a large N on one job), with the
    /// connection ramp and the idle memory of the large fleet.
    async fn fanout(&mut self) -> anyhow::Result<()> {
        let small = self.p.fanout_small;
        let large = self.p.fanout_large;

        let (bare_small, bare_small_peak) = self.bare_fanout(small, "tungstenite").await?;
        let base = self.base.clone();
        let sampler = RssSampler::start(self.server_pid(), Duration::from_millis(20));
        let one = self.server_fanout(&base, small, false, None).await?;
        let mut row = self.fanout_row(
            &format!("fan-out {small} clients × 1 job"),
            "sora-server",
            &one,
            Some(20.0),
            Some(&bare_small),
        );
        row.peak_rss_mib = Some(mib(sampler.peak_kib(self.server_pid())));
        self.rows.push(row);
        let mut b = self.fanout_row(
            &format!("fan-out {small} clients"),
            "bare ws broadcast",
            &bare_small,
            None,
            None,
        );
        b.peak_rss_mib = bare_small_peak;
        self.rows.push(b);

        let sampler = RssSampler::start(self.server_pid(), Duration::from_millis(20));
        let many = self.server_fanout(&base, small, true, None).await?;
        let mut row = self.fanout_row(
            &format!("fan-out {small} jobs × 1 client"),
            "sora-server",
            &many,
            Some(20.0),
            Some(&bare_small),
        );
        row.peak_rss_mib = Some(mib(sampler.peak_kib(self.server_pid())));
        row.note("one commit changes all the jobs");
        self.rows.push(row);

        // The large fleet on a fresh server, so its idle memory is not hidden by memory the
        // earlier scenarios freed.
        let (mut fresh, fresh_base) = self.start_server("server-fanout").await?;
        let pid = fresh.pid();
        let sampler = RssSampler::start(pid, Duration::from_millis(20));
        let big = self
            .server_fanout(&fresh_base, large, false, Some(pid))
            .await;
        let peak = mib(sampler.peak_kib(pid));
        drop(sampler);
        let _ = &mut fresh;
        fresh.stop(Duration::from_secs(5)).await;
        let big = big?;
        let (bare_big, bare_big_peak) = self.bare_fanout(large, "tungstenite").await?;
        // The same relay on actix-ws: the floor of the server's own WebSocket stack.
        let (actix_big, actix_big_peak) = self.bare_fanout(large, "actix").await?;

        let mut row = self.fanout_row(
            &format!("fan-out {large} clients × 1 job"),
            "sora-server",
            &big,
            Some(100.0),
            Some(&bare_big),
        );
        row.peak_rss_mib = Some(peak);
        self.rows.push(row);
        let mut b = self.fanout_row(
            &format!("fan-out {large} clients"),
            "bare ws broadcast",
            &bare_big,
            None,
            None,
        );
        b.peak_rss_mib = bare_big_peak;
        self.rows.push(b);
        let mut b = self.fanout_row(
            &format!("fan-out {large} clients"),
            "bare actix-ws broadcast",
            &actix_big,
            None,
            None,
        );
        b.peak_rss_mib = actix_big_peak;
        self.rows.push(b);
        let r = self.ramp_row("sora-server", &big.ramp, true, Some(&bare_big.ramp));
        self.rows.push(r);
        let r = self.ramp_row("bare ws", &bare_big.ramp, false, None);
        self.rows.push(r);
        let r = self.idle_row("sora-server", &big, true);
        self.rows.push(r);
        let r = self.idle_row("bare ws", &bare_big, false);
        self.rows.push(r);
        let r = self.idle_row("bare actix-ws", &actix_big, false);
        self.rows.push(r);
        Ok(())
    }

    /// A 50 MiB video downloaded whole by 1 and 16 clients, and in 1 MiB ranges by 16, from
    /// sora-server and from nginx.
    async fn download(&mut self) -> anyhow::Result<()> {
        const SIZE: u64 = 50 * 1024 * 1024;
        const RANGE: u64 = 1024 * 1024;
        let key_path = "bench/video-50mib.mp4";
        let file = self.storage_dir.join(key_path);
        std::fs::create_dir_all(file.parent().context("no parent")?)?;
        let mut data = vec![0u8; SIZE as usize];
        rand::rng().fill(&mut data[..]);
        std::fs::write(&file, &data)?;
        drop(data);
        let www = self.opts.out_dir.join("nginx/www");
        std::fs::create_dir_all(&www)?;
        let nginx_file = www.join("video-50mib.mp4");
        let _ = std::fs::remove_file(&nginx_file);
        if std::fs::hard_link(&file, &nginx_file).is_err() {
            std::fs::copy(&file, &nginx_file)?;
        }

        // A completed job whose video is that file: a job created through the API, then given
        // its files by a direct update (what the archiving step would have committed).
        let id = self.create_jobs(1).await?.pop().context("no job created")?;
        let artifacts = serde_json::json!({
            "video": {"key": key_path, "size": SIZE, "content_type": "video/mp4", "etag": null},
            "thumbnail": null,
            "spritesheet": null,
        });
        sqlx::query(
            "UPDATE jobs SET status = 'completed', progress = 100, video_id = $2, \
             artifacts = $3::jsonb, finished_at = now(), updated_at = now(), \
             version = version + 1 WHERE id = $1",
        )
        .bind(&id)
        .bind(format!("video_bench_{}", ulid::Ulid::new()))
        .bind(artifacts.to_string())
        .execute(&self.pool)
        .await?;
        let server_url = format!("{}/api/download?jobId={id}", self.base);

        let nginx = self.start_nginx(&www).await;
        let (nginx_proc, nginx_url) = match nginx {
            Ok((p, base)) => (Some(p), Some(format!("{base}/video-50mib.mp4"))),
            Err(e) => {
                self.baseline_missing("download", &format!("{e:#}"))?;
                (None, None)
            }
        };

        // The server's own HTTP stack serving the same file with nothing else in the way.
        let (files_proc, files_url) = self.start_file_baseline(&www).await?;

        for (label, clients, range) in [
            ("download 50 MiB, 1 client", 1usize, false),
            ("download 50 MiB, 16 clients", 16, false),
            ("download 1 MiB ranges, 16 clients", 16, true),
        ] {
            let sampler = RssSampler::start(self.server_pid(), Duration::from_millis(10));
            let before = sampler.baseline_kib();
            let s = self
                .fetch_load(
                    &server_url,
                    Some(self.key.clone()),
                    clients,
                    range,
                    SIZE,
                    RANGE,
                )
                .await;
            if s.ok == 0 {
                bail!(
                    "no download succeeded: {}",
                    s.first_error.unwrap_or_default()
                );
            }
            let peak = sampler.peak_kib(self.server_pid());
            let mut row = self.load_row(label, "sora-server", &s, "MB/s", Some(&sampler));
            let growth = mib(peak.saturating_sub(before));
            row.note(format!("{} transfers, RSS growth {growth:.1} MiB", s.ok));
            let n = match &nginx_url {
                Some(u) => Some(self.fetch_load(u, None, clients, range, SIZE, RANGE).await),
                None => None,
            };
            let mut budget_ok = true;
            row.budget = "≥ 0.80 × nginx".into();
            if clients == 16 && !range {
                row.budget.push_str(", growth ≤ 64 MiB");
                budget_ok &= growth <= 64.0;
            }
            if let Some(n) = &n {
                let ratio = s.megabytes_per_sec() / n.megabytes_per_sec().max(1e-9);
                row.ratio = Some(ratio);
                budget_ok &= ratio >= 0.80;
                row.verdict = self.judge(budget_ok);
            }
            self.rows.push(row);
            if let Some(n) = &n {
                let mut b = self.load_row(label, "nginx", n, "MB/s", None);
                b.note(format!("{} transfers", n.ok));
                self.rows.push(b);
            }
            let f = self
                .fetch_load(&files_url, None, clients, range, SIZE, RANGE)
                .await;
            let mut b = self.load_row(label, "actix-files", &f, "MB/s", None);
            if let Some(n) = &n {
                b.ratio = Some(f.megabytes_per_sec() / n.megabytes_per_sec().max(1e-9));
            }
            b.note(format!(
                "{} transfers; the server's HTTP stack alone; ratio to nginx",
                f.ok
            ));
            self.rows.push(b);
        }
        if let Some(p) = nginx_proc {
            p.stop(Duration::from_secs(2)).await;
        }
        files_proc.stop(Duration::from_secs(2)).await;

        // The read side alone, in this process: the store's stream versus large reads.
        let probe = crate::blob_probe::probe(&file, if self.opts.smoke { 2 } else { 10 }).await?;
        for (subject, mb_s, note) in [
            (
                "BlobStore stream",
                probe.blob_store_mb_s,
                format!(
                    "what BlobStore::get streams for file:// (ChunkedStore); chunks of {} bytes",
                    probe.blob_store_chunk
                ),
            ),
            (
                "object_store stream",
                probe.object_store_mb_s,
                format!(
                    "LocalFileSystem as it comes; chunks of {} bytes",
                    probe.object_store_chunk
                ),
            ),
            (
                "1 MiB reads",
                probe.chunked_1mib_mb_s,
                "std::fs::File::read on the blocking pool".to_owned(),
            ),
        ] {
            let mut row = Row::new("read 50 MiB file, no HTTP", subject);
            row.throughput = Some(mb_s);
            row.unit = "MB/s".into();
            if subject != "1 MiB reads" {
                row.ratio = Some(mb_s / probe.chunked_1mib_mb_s.max(1e-9));
            }
            row.note(note);
            self.rows.push(row);
        }
        Ok(())
    }

    async fn fetch_load(
        &self,
        url: &str,
        key: Option<String>,
        clients: usize,
        range: bool,
        size: u64,
        range_len: u64,
    ) -> LoadResult {
        let http = self.http.clone();
        let url = url.to_owned();
        load::closed_loop(clients, self.p.download, u64::MAX, move |_| {
            let http = http.clone();
            let url = url.clone();
            let key = key.clone();
            async move {
                let mut req = http.get(&url);
                if let Some(k) = &key {
                    req = req.bearer_auth(k);
                }
                let want = if range {
                    let start = rand::rng().random_range(0..size - range_len);
                    req = req.header("range", format!("bytes={start}-{}", start + range_len - 1));
                    range_len
                } else {
                    size
                };
                let mut r = req.send().await.map_err(|e| e.to_string())?;
                let expected = if range { 206 } else { 200 };
                if r.status().as_u16() != expected {
                    return Err(format!("status {}", r.status()));
                }
                let mut got = 0u64;
                while let Some(chunk) = r.chunk().await.map_err(|e| e.to_string())? {
                    got += chunk.len() as u64;
                }
                if got != want {
                    return Err(format!("got {got} bytes, expected {want}"));
                }
                Ok(got)
            }
        })
        .await
    }

    /// `sora-bench file-baseline` serving `www`; answers the process and the file's URL.
    async fn start_file_baseline(&self, www: &Path) -> anyhow::Result<(Proc, String)> {
        let port = procs::free_port()?;
        let bind = format!("127.0.0.1:{port}");
        let www_s = www.display().to_string();
        let mut proc = Proc::spawn(
            "actix-files",
            &self.opts.bench_bin,
            &["file-baseline", "--bind", &bind, "--dir", &www_s],
            &HashMap::new(),
            &self.opts.out_dir.join("file-baseline.log"),
        )?;
        let url = format!("http://{bind}/video-50mib.mp4");
        proc.wait_ready(&self.http, &url, Instant::now(), Duration::from_secs(10))
            .await
            .context("the actix-files baseline did not start")?;
        Ok((proc, url))
    }

    async fn start_nginx(&self, www: &Path) -> anyhow::Result<(Proc, String)> {
        let nginx = procs::which("nginx").context(
            "nginx is not installed (apt-get install nginx-light; bench/run.sh does it)",
        )?;
        let template = std::fs::read_to_string(self.opts.repo.join("bench/nginx.conf"))
            .context("cannot read bench/nginx.conf")?;
        let port = procs::free_port()?;
        let prefix = self.opts.out_dir.join("nginx");
        std::fs::create_dir_all(prefix.join("tmp"))?;
        // Run as root, nginx's workers would switch to `nobody`, who cannot enter a private
        // checkout (one made under `mktemp -d`, say) to read the file: keep them as root then.
        let user = if running_as_root() { "user root;" } else { "" };
        let conf = template
            .replace("@USER@", user)
            .replace("@PORT@", &port.to_string())
            .replace("@ROOT@", &www.display().to_string())
            .replace("@PREFIX@", &prefix.display().to_string());
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let prefix_s = format!("{}/", prefix.display());
        let conf_s = conf_path.display().to_string();
        let mut proc = Proc::spawn(
            "nginx",
            &nginx,
            &["-p", &prefix_s, "-c", &conf_s],
            &HashMap::new(),
            &prefix.join("stderr.log"),
        )?;
        let base = format!("http://127.0.0.1:{port}");
        proc.wait_ready(
            &self.http,
            &format!("{base}/video-50mib.mp4"),
            Instant::now(),
            Duration::from_secs(10),
        )
        .await
        .with_context(|| format!("see {}", prefix.join("error.log").display()))?;
        Ok((proc, base))
    }

    /// Process start to `/readyz` answering 200: SQLite (a fresh file) and PostgreSQL (the
    /// run's database, already migrated). Default `serve`, workers included.
    async fn startup(&mut self) -> anyhow::Result<()> {
        let dir = self.opts.out_dir.join("startup");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        for (label, sqlite) in [("SQLite, new file", true), ("PostgreSQL", false)] {
            let mut h = stats::histogram();
            for i in 0..self.p.startup_runs {
                let db = if sqlite {
                    format!("sqlite://{}/sora-{i}.db", dir.display())
                } else {
                    self.db_url.clone()
                };
                let port = procs::free_port()?;
                let storage = dir.join(format!("storage-{i}"));
                let env = self.server_env(&db, port, &storage);
                let log = dir.join(format!("server-{i}.log"));
                let t = Instant::now();
                let mut p =
                    Proc::spawn("sora-server", &self.opts.server_bin, &["serve"], &env, &log)?;
                let took = p
                    .wait_ready(
                        &self.http,
                        &format!("http://127.0.0.1:{port}/readyz"),
                        t,
                        Duration::from_secs(30),
                    )
                    .await
                    .with_context(|| format!("see {}", log.display()))?;
                stats::record(&mut h, took);
                p.stop(Duration::from_secs(5)).await;
            }
            let mut row = Row::new(format!("start-up to /readyz ({label})"), "sora-server");
            let l = Latency::of(&h);
            row.latency = Some(l);
            row.budget = "≤ 500 ms".into();
            row.verdict = self.judge(l.max_ms <= 500.0);
            row.note(format!("{} starts", self.p.startup_runs));
            self.rows.push(row);
        }
        Ok(())
    }
}

/// What one fan-out measured.
struct FanoutOutcome {
    connected: usize,
    ramp: Ramp,
    latency: hdrhistogram::Histogram<u64>,
    missed: usize,
    /// RSS before and after the clients connected, KiB.
    idle: Option<(u64, u64)>,
}

/// Whether this process runs as root (the owner of its `/proc/self` entry).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
