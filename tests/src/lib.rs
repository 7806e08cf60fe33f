//! The harness of the end-to-end tests: the real server on an ephemeral port, a fresh database
//! (PostgreSQL or SQLite), the emulator as the provider, and a client with one method per route.

use std::collections::HashMap;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use sora_emulator::{Emulator, EmulatorConfig, EmulatorHandle, WebhookTarget};
use sora_openai::webhook::WebhookSecret;
use sora_server::{RunningServer, StartOptions};
use sora_service::ServiceConfig;
use sora_store::testing::TestPostgres;
use tokio_tungstenite::tungstenite::Message;

/// Which database an app uses.
#[derive(Debug, Clone)]
pub enum Db {
    /// A fresh PostgreSQL database.
    Postgres,
    /// An existing PostgreSQL database (to share between two instances).
    PostgresUrl(String),
    /// A SQLite file in the app's temporary directory.
    Sqlite,
}

/// How to start a test app.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// The database.
    pub db: Db,
    /// `Some`: use this external provider (an emulator the test controls) with this webhook
    /// secret; `None`: the server's built-in emulator.
    pub provider: Option<(String, Option<WebhookSecret>)>,
    /// The poller's base interval.
    pub poll_ms: u64,
    /// The built-in emulator's generation time.
    pub emulator_ms: u64,
    /// Run the workers.
    pub workers: bool,
    /// The worker id (for tests with several instances).
    pub worker_id: Option<String>,
    /// Extra tuning of the service.
    pub tune: fn(&mut ServiceConfig),
    /// A shared storage directory (for several instances); default: the app's own.
    pub storage_dir: Option<std::path::PathBuf>,
    /// Extra environment variables.
    pub env: Vec<(&'static str, String)>,
}

/// Small backoffs, short leases and a fast idle tick, so that tests finish quickly.
pub fn fast(cfg: &mut ServiceConfig) {
    cfg.backoff = sora_openai::Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
    cfg.idle_tick = Duration::from_millis(50);
    cfg.lease_for = Duration::from_secs(3);
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            db: Db::Postgres,
            provider: None,
            poll_ms: 100,
            emulator_ms: 600,
            workers: true,
            worker_id: None,
            tune: fast,
            storage_dir: None,
            env: Vec::new(),
        }
    }
}

/// A running server and a client for it.
pub struct TestApp {
    /// The server.
    pub server: Option<RunningServer>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// An HTTP client.
    pub http: reqwest::Client,
    /// An API key of owner `alice`.
    pub key: String,
    /// The database (dropped with the app).
    pub db: Option<TestPostgres>,
    /// The database URL.
    pub db_url: String,
    /// Storage and SQLite files.
    pub dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp").field("base", &self.base).finish()
    }
}

/// An emulator the test controls, with webhooks to `webhook_url` signed by `secret`.
pub async fn start_emulator(
    webhook_url: Option<String>,
    secret: &WebhookSecret,
    duration_ms: u64,
) -> EmulatorHandle {
    let config = EmulatorConfig {
        generation_duration: Duration::from_millis(duration_ms),
        webhook: webhook_url.map(|u| WebhookTarget {
            url: u.parse().expect("webhook URL"),
            secret: secret.clone(),
        }),
        ..Default::default()
    };
    Emulator::start(config).await.expect("emulator starts")
}

impl TestApp {
    /// Starts an app with the defaults: PostgreSQL, the built-in emulator, workers.
    pub async fn spawn() -> Self {
        Self::spawn_with(AppOptions::default()).await
    }

    /// Starts an app.
    pub async fn spawn_with(options: AppOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, db_url) = match &options.db {
            Db::Postgres => {
                let db = TestPostgres::new().await;
                let url = db.url.clone();
                (Some(db), url)
            }
            Db::PostgresUrl(url) => (None, url.clone()),
            Db::Sqlite => (None, format!("sqlite://{}/sora.db", dir.path().display())),
        };
        let storage = options
            .storage_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("videos"));
        let mut env: HashMap<&str, String> = HashMap::new();
        env.insert("SORA_BIND", "127.0.0.1:0".into());
        env.insert("DATABASE_URL", db_url.clone());
        env.insert("SORA_STORAGE_URL", format!("file://{}", storage.display()));
        env.insert("SORA_POLL_INTERVAL_MS", options.poll_ms.to_string());
        env.insert("SORA_EMULATOR_DURATION_MS", options.emulator_ms.to_string());
        env.insert("SORA_LINK_SECRET", "test-link-secret".into());
        if let Some((url, secret)) = &options.provider {
            env.insert("OPENAI_API_KEY", "sk-test".into());
            env.insert("OPENAI_BASE_URL", url.clone());
            if let Some(secret) = secret {
                use secrecy::ExposeSecret;
                env.insert(
                    "OPENAI_WEBHOOK_SECRET",
                    secret.to_whsec().expose_secret().to_owned(),
                );
            }
        }
        for (k, v) in &options.env {
            env.insert(k, v.clone());
        }
        let config = sora_server::Config::from_lookup(|k| env.get(k).cloned()).expect("config");
        let server = sora_server::start(
            config,
            StartOptions {
                no_workers: !options.workers,
                worker_id: options.worker_id.clone(),
                tune: Some(options.tune),
            },
        )
        .await
        .expect("server starts");
        let base = format!("http://{}", server.addr());
        let mut app = Self {
            server: Some(server),
            base,
            http: reqwest::Client::new(),
            key: String::new(),
            db,
            db_url,
            dir,
        };
        app.key = app.create_key("alice").await;
        app
    }

    /// The running server.
    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("server running")
    }

    /// A new API key for `owner`.
    pub async fn create_key(&self, owner: &str) -> String {
        let key = sora_service::generate_api_key();
        self.server()
            .service()
            .store()
            .create_api_key(
                &owner.parse().expect("owner"),
                &sora_service::hash_api_key(&key),
                None,
            )
            .await
            .expect("key stored");
        key
    }

    /// `url` relative to the server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `POST /api/generate` with a JSON body and alice's key.
    pub async fn generate(&self, body: Value) -> reqwest::Response {
        self.http
            .post(self.url("/api/generate?renderVersion=v3"))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Creates a job from a prompt and returns its id.
    pub async fn create_job(&self, prompt: &str) -> String {
        let res = self
            .generate(serde_json::json!({"prompt": prompt, "preset": "draft"}))
            .await;
        assert_eq!(res.status(), 202, "create answered {}", res.status());
        let body: Value = res.json().await.expect("json");
        body["jobId"].as_str().expect("jobId").to_owned()
    }

    /// `GET /api/status` with `key`.
    pub async fn status_with(&self, job: &str, key: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/api/status?jobId={job}&renderVersion=v3")))
            .bearer_auth(key)
            .send()
            .await
            .expect("request")
    }

    /// The job as JSON (alice's key).
    pub async fn status(&self, job: &str) -> Value {
        let res = self.status_with(job, &self.key).await;
        assert_eq!(res.status(), 200);
        res.json().await.expect("json")
    }

    /// Waits until the job's public status is `want` (or any terminal status, which then must
    /// be `want`), up to `timeout`.
    pub async fn wait_for(&self, job: &str, want: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.status(job).await;
            let status = s["status"].as_str().unwrap_or_default().to_owned();
            if status == want {
                return s;
            }
            let terminal = matches!(status.as_str(), "completed" | "failed" | "cancelled");
            assert!(!terminal, "job ended {status}, expected {want}: {s}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "job still {status} after {timeout:?}, expected {want}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET url` with alice's key.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("request")
    }

    /// Opens a WebSocket with `token` in the query string.
    pub async fn ws(&self, query: &str) -> Ws {
        let url = format!(
            "ws://{}/api/ws?token={}{}",
            self.server().addr(),
            self.key,
            query
        );
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Ws { stream }
    }

    /// Stops the server as a crash would (leases left to expire) and hands back the database,
    /// so another instance can carry on with it.
    pub async fn kill(mut self) -> Option<TestPostgres> {
        if let Some(server) = self.server.take() {
            server.kill().await;
        }
        self.db.take()
    }

    /// Stops the server gracefully and drops the database.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        if let Some(db) = self.db.take() {
            db.cleanup().await;
        }
    }
}

/// A WebSocket client.
pub struct Ws {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl std::fmt::Debug for Ws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ws")
    }
}

impl Ws {
    /// Sends a JSON message.
    pub async fn send(&mut self, msg: Value) {
        self.stream
            .send(Message::text(msg.to_string()))
            .await
            .expect("send");
    }

    /// The next JSON text message, skipping pings, within `timeout`. `None` when closed.
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("a WebSocket message in time")?;
            match msg.ok()? {
                Message::Text(t) => {
                    return Some(serde_json::from_str(t.as_str()).expect("JSON frame"));
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Reads messages about `job` until one has status `want`; returns every message read.
    pub async fn until_status(&mut self, job: &str, want: &str, timeout: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = self
                .next(left)
                .await
                .unwrap_or_else(|| panic!("socket closed before {want}; saw {seen:?}"));
            let done = msg["jobId"] == job && msg["status"] == want;
            seen.push(msg);
            if done {
                return seen;
            }
        }
    }
}
