//! Start-up: wiring the store, the provider (or the built-in emulator), the service, the workers
//! and the HTTP server; and graceful shutdown.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sora_core::Catalogue;
use sora_openai::webhook::WebhookSecret;
use sora_openai::{OpenAiClient, OpenAiConfig, VideoProvider};
use sora_service::{LinkSigner, PollSchedule, ServiceConfig, VideoService, Workers, WorkersHandle};
use sora_store::BlobStore;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::auth::ApiKeyAuth;
use crate::config::{Config, redact_url};
use crate::embed::SoraApi;
use crate::error::ApiError;
use crate::metrics::{MeteredProvider, Metrics};
use crate::routes::ApiState;

/// A running server: its address, and the handles to stop it.
pub struct RunningServer {
    addr: std::net::SocketAddr,
    public_url: Url,
    server: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    workers: Option<WorkersHandle>,
    emulator: Option<sora_emulator::EmulatorHandle>,
    shutdown: CancellationToken,
    state: web::Data<ApiState>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningServer {
    /// The address the server listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The public base URL used in links.
    pub fn public_url(&self) -> &Url {
        &self.public_url
    }

    /// The service (for tools and tests).
    pub fn service(&self) -> &VideoService {
        &self.state.service
    }

    /// The built-in emulator, when the server runs against it.
    pub fn emulator(&self) -> Option<&sora_emulator::EmulatorHandle> {
        self.emulator.as_ref()
    }

    /// Graceful shutdown: stop accepting, close WebSockets with a reason, let requests in
    /// flight finish, stop the workers and give back their leases, stop the emulator.
    pub async fn stop(mut self) {
        tracing::info!("shutting down");
        self.shutdown.cancel();
        self.server.stop(true).await;
        let _ = (&mut self.task).await;
        if let Some(workers) = self.workers.take() {
            workers.shutdown().await;
        }
        if let Some(emulator) = self.emulator.take() {
            emulator.stop().await;
        }
        tracing::info!("stopped");
    }

    /// Stops as a crash would: connections dropped, workers aborted mid-step, leases left to
    /// expire, nothing given back. For tests of recovery.
    pub async fn kill(mut self) {
        self.shutdown.cancel();
        self.server.stop(false).await;
        self.task.abort();
        // Dropping the handle aborts the worker tasks without releasing their leases.
        drop(self.workers.take());
        if let Some(emulator) = self.emulator.take() {
            emulator.stop().await;
        }
    }

    /// Waits until the HTTP server ends by itself (it normally does not).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// `url` with a path ending in `/`, so that joining keeps its last segment.
fn with_trailing_slash(url: &Url) -> Url {
    let mut url = url.clone();
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

/// A worker id unique to this process: host, process id and a random suffix.
fn worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let suffix: u32 = rand_suffix();
    format!("{host}-{}-{suffix:08x}", std::process::id())
}

fn rand_suffix() -> u32 {
    // The ULID's random part is good enough for a suffix and saves a dependency.
    let id = sora_core::JobId::new().to_string();
    u32::from_str_radix(&id[id.len() - 6..].to_ascii_lowercase(), 36).unwrap_or(0)
}

/// Options the standalone binary and the tests set beyond [`Config`].
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Do not run the background workers in this process.
    pub no_workers: bool,
    /// A worker id (default: host, pid and a random suffix).
    pub worker_id: Option<String>,
    /// Overrides of the service's tunables, applied after the configuration.
    pub tune: Option<fn(&mut ServiceConfig)>,
}

/// Builds everything from the configuration and starts serving.
pub async fn start(config: Config, options: StartOptions) -> anyhow::Result<RunningServer> {
    let started = Instant::now();
    let listener = TcpListener::bind(config.bind)
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let public_url = if config.bind.port() == 0 && config.public_url.port() == Some(0) {
        // An ephemeral port (tests): the links use the port we actually got.
        Url::parse(&format!("http://{}:{}", addr.ip(), addr.port()))?
    } else {
        config.public_url.clone()
    };

    let db_url = config.database_url.expose_secret();
    tracing::info!(database = %redact_url(db_url), "connecting to the database");
    let store = sora_store::connect(db_url)
        .await
        .with_context(|| format!("cannot open the database {}", redact_url(db_url)))?;
    let blobs = Arc::new(
        BlobStore::from_url(&config.storage_url)
            .with_context(|| format!("cannot open the storage {}", config.storage_url))?,
    );
    let metrics = Arc::new(Metrics::new());

    let mut webhook_secrets = config.webhook_secrets.clone();
    let (provider, emulator): (Arc<dyn VideoProvider>, _) = match &config.openai_api_key {
        Some(key) => {
            let client = OpenAiClient::new(
                OpenAiConfig::new(key.clone()).with_base_url(config.openai_base_url.clone()),
            )
            .context("cannot build the provider client")?;
            tracing::info!(base_url = %config.openai_base_url, "using the provider");
            (Arc::new(client), None)
        }
        None => {
            let secret = WebhookSecret::generate();
            let webhook_url = with_trailing_slash(&public_url)
                .join("api/webhook/video-events")
                .context("cannot build the webhook URL")?;
            let emulator_config = sora_emulator::EmulatorConfig {
                generation_duration: config.emulator_duration,
                webhook: Some(sora_emulator::WebhookTarget {
                    url: webhook_url,
                    secret: secret.clone(),
                }),
                ..Default::default()
            };
            let emulator = sora_emulator::Emulator::start(emulator_config)
                .await
                .context("cannot start the built-in emulator")?;
            tracing::warn!(
                emulator = %emulator.base_url(),
                "OPENAI_API_KEY is not set: using the BUILT-IN EMULATOR as the provider; \
                 videos are sample clips, not generations"
            );
            webhook_secrets.push(secret);
            let client = OpenAiClient::new(
                OpenAiConfig::new(SecretString::from("sk-sora-local-emulator"))
                    .with_base_url(Url::parse(&emulator.base_url())?),
            )?;
            (Arc::new(client), Some(emulator))
        }
    };
    let provider: Arc<dyn VideoProvider> =
        Arc::new(MeteredProvider::new(provider, metrics.clone()));
    if webhook_secrets.is_empty() {
        tracing::warn!(
            "OPENAI_WEBHOOK_SECRET is not set: the webhook route answers 503; jobs finish by polling"
        );
    }

    let mut service_config =
        ServiceConfig::new(options.worker_id.clone().unwrap_or_else(worker_id));
    if let Some(path) = &config.catalogue_path {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the catalogue {}", path.display()))?;
        service_config.catalogue = serde_json::from_str::<Catalogue>(&text)
            .with_context(|| format!("the catalogue {} is not valid", path.display()))?;
    }
    service_config.poll = PollSchedule::with_base(config.poll_interval);
    service_config.max_active_jobs = config.max_active_jobs;
    service_config.job_deadline = config.job_deadline;
    service_config.retention = config.retention;
    service_config.max_input_image_bytes = config.max_upload_bytes;
    if let Some(tune) = options.tune {
        tune(&mut service_config);
    }
    let service = VideoService::new(store.clone(), provider, blobs, service_config);

    let signer = match &config.link_secret {
        Some(secret) => {
            LinkSigner::new(secret.expose_secret().as_bytes().to_vec(), config.link_ttl)
        }
        None => LinkSigner::random(config.link_ttl),
    };
    let shutdown = CancellationToken::new();
    // In emulator mode the demo page gets a key that lives in this process only.
    let dev_key = emulator.as_ref().map(|_| sora_service::generate_api_key());
    let mut auth = ApiKeyAuth::new(store);
    if let Some(key) = &dev_key {
        auth = auth.with_ephemeral_key(key, "demo".parse().expect("a valid owner"));
    }
    let api = SoraApi::builder(service.clone(), public_url.clone())
        .authenticator(auth)
        .link_signer(signer)
        .webhook_secrets(webhook_secrets)
        .allowed_origins(config.cors_origins.clone())
        .max_upload_bytes(config.max_upload_bytes)
        .metrics(metrics)
        .shutdown_token(shutdown.clone())
        .dev_key(dev_key)
        .build();
    let state = api.state().clone();

    let workers =
        (!options.no_workers).then(|| Workers::new(service.clone()).spawn(shutdown.child_token()));

    let app_api = api.clone();
    let cors_origins = config.cors_origins.clone();
    let own_origin = public_url.origin().ascii_serialization();
    let server = HttpServer::new(move || {
        let app_api = app_api.clone();
        App::new()
            // CORS inside the error rewriter, so that its refusals get our JSON shape too.
            .wrap(cors(&cors_origins, &own_origin))
            .wrap(error_bodies())
            .wrap_fn(|req, srv| {
                let started = Instant::now();
                let method = req.method().to_string();
                let state = req.app_data::<web::Data<ApiState>>().cloned();
                let fut = srv.call(req);
                async move {
                    let res = fut.await?;
                    if let Some(state) = state {
                        let route = res
                            .request()
                            .match_pattern()
                            .unwrap_or_else(|| "unmatched".into());
                        state.metrics.http_request(
                            &route,
                            &method,
                            res.status().as_u16(),
                            started.elapsed().as_secs_f64(),
                        );
                    }
                    Ok(res)
                }
            })
            .configure(|cfg| app_api.configure(cfg))
            .configure(|cfg| app_api.configure_ops(cfg))
            .configure(crate::demo::routes)
            .default_service(web::to(not_found))
    })
    .client_request_timeout(Duration::from_secs(10))
    .client_disconnect_timeout(Duration::from_secs(5))
    .shutdown_timeout(10)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    tracing::info!(
        %addr,
        public_url = %public_url,
        startup_ms = started.elapsed().as_millis() as u64,
        "listening"
    );
    Ok(RunningServer {
        addr,
        public_url,
        server: handle,
        task,
        workers,
        emulator,
        shutdown,
        state,
    })
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        actix_web::http::StatusCode::NOT_FOUND,
        "route_not_found",
        "No such route; see /api/openapi.json",
    ))
}

/// CORS for browser frontends on other origins: the configured list plus our own origin.
fn cors(origins: &[String], own: &str) -> actix_cors::Cors {
    let mut allowed: Vec<String> = origins.to_vec();
    allowed.push(own.to_owned());
    let any = allowed.iter().any(|o| o == "*");
    actix_cors::Cors::default()
        .allowed_origin_fn(move |origin, _req| {
            any || origin
                .to_str()
                .map(|o| allowed.iter().any(|a| a == o))
                .unwrap_or(false)
        })
        .allowed_methods(["GET", "POST", "DELETE", "OPTIONS"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::RANGE,
            header::IF_NONE_MATCH,
            header::HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::CONTENT_RANGE,
            header::CONTENT_LENGTH,
            header::CONTENT_DISPOSITION,
            header::HeaderName::from_static("idempotent-replayed"),
        ])
        .max_age(3600)
}

/// Turns every error answer that is not already JSON (from actix's extractors, CORS, payload
/// limits) into the `{"error":{"code","message"}}` shape.
fn error_bodies<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(|res: ServiceResponse<B>| {
        let is_json = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));
        if is_json {
            return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
        }
        let status = res.status();
        let code = match status.as_u16() {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            405 => "method_not_allowed",
            408 => "request_timeout",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            s if s >= 500 => "internal_error",
            _ => "error",
        };
        let message = status.canonical_reason().unwrap_or("Error").to_owned();
        let (req, old) = res.into_parts();
        let mut new = HttpResponse::build(status).json(serde_json::json!({
            "error": {"code": code, "message": message}
        }));
        // Keep the headers that matter (CORS, Allow, Content-Range).
        for (name, value) in old.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                new.headers_mut().insert(name.clone(), value.clone());
            }
        }
        let res: ServiceResponse<EitherBody<B, BoxBody>> =
            ServiceResponse::new(req, new).map_into_right_body();
        Ok(ErrorHandlerResponse::Response(res))
    })
}
