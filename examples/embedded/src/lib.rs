//! An application team's own actix-web backend, with its own (trivial) cookie login, that mounts
//! the video-job API under `/media/` and runs the workers in the same process.
//!
//! Everything it uses is public API: `sora_server::{SoraApi, Authenticator, AuthContext,
//! ApiError}`, `sora_service::{VideoService, ServiceConfig, Workers}`, `sora_store::connect`,
//! `sora_openai::OpenAiClient`, and the emulator as the provider.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::header;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context;
use async_trait::async_trait;
use secrecy::SecretString;
use sora_core::{JobId, OwnerId};
use sora_emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use sora_openai::{OpenAiClient, OpenAiConfig};
use sora_server::{ApiError, AuthContext, Authenticator, SoraApi};
use sora_service::{PollSchedule, ServiceConfig, VideoService, Workers, WorkersHandle};
use sora_store::BlobStore;
use tokio_util::sync::CancellationToken;

/// The application's sessions: cookie value to user. (A real application has its own.)
#[derive(Debug, Default)]
pub struct Sessions(Mutex<HashMap<String, OwnerId>>);

impl Sessions {
    fn open(&self, user: OwnerId) -> String {
        // A session id that is unique and unguessable enough for an example.
        let token = format!("s_{}", JobId::new());
        self.0
            .lock()
            .expect("sessions lock")
            .insert(token.clone(), user);
        token
    }

    fn user(&self, token: &str) -> Option<OwnerId> {
        self.0.lock().expect("sessions lock").get(token).cloned()
    }
}

/// The application's authenticator: its session cookie, for the REST routes and the
/// WebSocket alike (browsers send cookies on both).
#[derive(Debug, Clone)]
pub struct CookieAuth {
    sessions: Arc<Sessions>,
}

fn cookie<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[async_trait(?Send)]
impl Authenticator for CookieAuth {
    async fn authenticate(
        &self,
        req: &HttpRequest,
        _ctx: AuthContext,
    ) -> Result<OwnerId, ApiError> {
        cookie(req, "session")
            .and_then(|token| self.sessions.user(token))
            .ok_or_else(|| ApiError::unauthorized("Log in first (POST /login)"))
    }
}

async fn login(
    form: web::Form<HashMap<String, String>>,
    sessions: web::Data<Sessions>,
) -> HttpResponse {
    let Some(user) = form.get("user").and_then(|u| u.parse::<OwnerId>().ok()) else {
        return HttpResponse::BadRequest().body("send user=NAME");
    };
    let token = sessions.open(user);
    HttpResponse::NoContent()
        .insert_header((
            header::SET_COOKIE,
            format!("session={token}; Path=/; HttpOnly; SameSite=Lax"),
        ))
        .finish()
}

/// The running example.
#[derive(Debug)]
pub struct Embedded {
    /// Where it listens.
    pub addr: SocketAddr,
    server: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    workers: WorkersHandle,
    emulator: EmulatorHandle,
    api: SoraApi,
}

impl Embedded {
    /// Stops everything: WebSockets, HTTP, workers (giving back their leases), the emulator.
    pub async fn stop(self) {
        self.api.shutdown();
        self.server.stop(true).await;
        let _ = self.task.await;
        self.workers.shutdown().await;
        self.emulator.stop().await;
    }

    /// Waits for the HTTP server to end.
    pub async fn wait(&mut self) -> std::io::Result<()> {
        (&mut self.task).await.map_err(std::io::Error::other)?
    }
}

/// Starts the application on `bind` with its own database and storage.
pub async fn start(bind: &str, database_url: &str, storage_url: &str) -> anyhow::Result<Embedded> {
    // The provider: the emulator, so the example runs anywhere. A real application would
    // point `OpenAiClient` at its provider with its key.
    let emulator = Emulator::start(EmulatorConfig {
        generation_duration: Duration::from_millis(800),
        ..Default::default()
    })
    .await?;
    let provider = OpenAiClient::new(
        OpenAiConfig::new(SecretString::from("emulator"))
            .with_base_url(emulator.base_url().parse()?),
    )?;

    // The application's own database and storage.
    let store = sora_store::connect(database_url).await?;
    let blobs = BlobStore::from_url(storage_url)?;
    let mut config = ServiceConfig::new(format!("embedded-{}", std::process::id()));
    config.poll = PollSchedule::with_base(Duration::from_millis(200));
    config.idle_tick = Duration::from_millis(100);
    let service = VideoService::new(store, Arc::new(provider), Arc::new(blobs), config);

    // The workers in this process (they could as well run in a separate worker process
    // against the same PostgreSQL).
    let workers = Workers::new(service.clone()).spawn(CancellationToken::new());

    let listener = std::net::TcpListener::bind(bind).context("bind")?;
    let addr = listener.local_addr()?;
    let sessions = web::Data::new(Sessions::default());
    let api = SoraApi::builder(service, format!("http://{addr}/media/").parse()?)
        .authenticator(CookieAuth {
            sessions: sessions.clone().into_inner(),
        })
        .build();

    let app_api = api.clone();
    let server = HttpServer::new(move || {
        let api = app_api.clone();
        App::new()
            .app_data(sessions.clone())
            .route("/login", web::post().to(login))
            .service(web::scope("/media").configure(move |cfg| api.configure(cfg)))
    })
    .workers(2)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    tracing::info!(%addr, "the embedded example listens; POST /login, then /media/api/...");
    Ok(Embedded {
        addr,
        server: handle,
        task,
        workers,
        emulator,
        api,
    })
}
