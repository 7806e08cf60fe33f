//! Starting and stopping the emulator inside an existing tokio runtime.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use actix_web::dev::ServerHandle;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::api::{self, Shared};
use crate::config::{ConfigError, EmulatorConfig, Faults};
use crate::state::Store;
use crate::webhook;

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address could not be bound (in use, not local...).
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The webhook HTTP client could not be built.
    #[error("could not build the webhook client: {0}")]
    WebhookClient(#[source] reqwest::Error),
}

/// The entry point: [`Emulator::start`].
#[derive(Debug, Clone, Copy)]
pub struct Emulator;

impl Emulator {
    /// Starts the emulator on `config.bind` inside the current tokio runtime and returns once it
    /// accepts connections. The HTTP server runs on one actix worker thread; the job ticker and
    /// the webhook dispatcher run as tasks of the calling runtime.
    pub async fn start(config: EmulatorConfig) -> Result<EmulatorHandle, StartError> {
        config.validate()?;
        let client = webhook::client(&config.webhook_retry).map_err(StartError::WebhookClient)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let store = Store::new(
            config.generation_duration,
            config.content_ttl,
            config.faults.clone(),
            tx,
        );
        let shared = web::Data::new(Shared {
            store: Mutex::new(store),
            config: config.clone(),
        });
        let app_state = shared.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .wrap(from_fn(api::frame_fn))
                .configure(api::configure)
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .bind(config.bind)
        .map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        let addr = server.addrs().first().copied().unwrap_or(config.bind);
        let server = server.run();
        let server_handle = server.handle();
        let server_task = tokio::spawn(server);

        let ticking = shared.clone();
        let tick = config.tick_interval;
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                ticking.store().advance_all(Instant::now());
            }
        });
        let dispatcher = tokio::spawn(webhook::run(
            rx,
            config.webhook.clone(),
            config.webhook_retry.clone(),
            client,
        ));
        tracing::info!(
            %addr,
            webhooks = config.webhook.is_some(),
            auth = if config.api_key.is_some() { "api key" } else { "any bearer token" },
            "sora emulator listening"
        );
        Ok(EmulatorHandle {
            addr,
            shared,
            server: server_handle,
            tasks: vec![watch_server(server_task), ticker, dispatcher],
        })
    }
}

/// Logs how the HTTP server task ended (it is stopped through its `ServerHandle`).
fn watch_server(task: JoinHandle<std::io::Result<()>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the emulator's HTTP server failed"),
            Err(e) if e.is_cancelled() => {}
            Err(e) => tracing::error!(error = %e, "the emulator's HTTP server panicked"),
        }
    })
}

/// A running emulator. Dropping it stops the background tasks and asks the server to stop;
/// [`EmulatorHandle::stop`] also waits for the server to be gone.
#[derive(Debug)]
pub struct EmulatorHandle {
    addr: SocketAddr,
    shared: web::Data<Shared>,
    server: ServerHandle,
    tasks: Vec<JoinHandle<()>>,
}

impl EmulatorHandle {
    /// The base URL of the API, e.g. `http://127.0.0.1:41234/v1`: give it to an OpenAI client as
    /// its base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The address the emulator listens on (with the real port when it was started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The global faults now in force.
    pub fn faults(&self) -> Faults {
        self.shared.store().faults().clone()
    }

    /// Replaces the global faults while running (the "first N creates" counters restart from
    /// zero). Jobs already created keep the faults they were created with, except the webhook
    /// drop share, which is read when a job ends.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.store().set_faults(faults);
    }

    /// Stops the server gracefully (in-flight requests finish, at most a second), the ticker and
    /// the webhook dispatcher (webhooks not yet delivered are abandoned).
    pub async fn stop(mut self) {
        self.server.stop(true).await;
        for task in self.tasks.drain(..) {
            task.abort();
        }
        tracing::info!(addr = %self.addr, "sora emulator stopped");
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Sends the stop command at once; the returned future would only wait for completion.
        drop(self.server.stop(false));
    }
}
