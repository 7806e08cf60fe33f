//! Mounting the API inside another actix-web application.
//!
//! ```no_run
//! # async fn example(service: sora_service::VideoService, auth: sora_server::ApiKeyAuth) -> std::io::Result<()> {
//! use actix_web::{App, HttpServer, web};
//! use sora_server::SoraApi;
//!
//! let api = SoraApi::builder(service, "http://127.0.0.1:3000/media/".parse().unwrap())
//!     .authenticator(auth)
//!     .build();
//! HttpServer::new(move || {
//!     let api = api.clone();
//!     App::new().service(web::scope("/media").configure(move |cfg| api.configure(cfg)))
//! })
//! .bind("127.0.0.1:3000")?
//! .run()
//! .await
//! # }
//! ```

use std::sync::Arc;

use actix_web::web;
use sora_openai::webhook::{WebhookSecret, WebhookVerifier};
use sora_service::{LinkSigner, VideoService};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::auth::{ApiKeyAuth, Authenticator};
use crate::dto::Links;
use crate::metrics::Metrics;
use crate::routes::{ApiState, api_routes, ops_routes};
use crate::ws::Hub;

/// The API, ready to be mounted on an `App` or a `Scope` with [`SoraApi::configure`].
///
/// Cheap to clone: clones share one state and one WebSocket hub.
#[derive(Clone, Debug)]
pub struct SoraApi {
    state: web::Data<ApiState>,
}

/// Builds a [`SoraApi`].
pub struct SoraApiBuilder {
    service: VideoService,
    public_url: Url,
    auth: Option<Arc<dyn Authenticator>>,
    signer: Option<LinkSigner>,
    webhook_secrets: Vec<WebhookSecret>,
    allowed_origins: Vec<String>,
    max_upload_bytes: usize,
    metrics: Option<Arc<Metrics>>,
    shutdown: CancellationToken,
    dev_key: Option<String>,
}

impl std::fmt::Debug for SoraApiBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoraApiBuilder")
            .field("public_url", &self.public_url.as_str())
            .finish_non_exhaustive()
    }
}

impl SoraApi {
    /// Starts building the API over `service`. `public_url` is where the mounted routes are
    /// reachable from outside, including the mount prefix (`https://app.example.com/media/`):
    /// links in answers are built from it.
    pub fn builder(service: VideoService, public_url: Url) -> SoraApiBuilder {
        SoraApiBuilder {
            service,
            public_url,
            auth: None,
            signer: None,
            webhook_secrets: Vec::new(),
            allowed_origins: Vec::new(),
            max_upload_bytes: 10 * 1024 * 1024,
            metrics: None,
            shutdown: CancellationToken::new(),
            dev_key: None,
        }
    }

    /// Registers the API routes (`api/generate`, `api/status`, `api/download`,
    /// `api/webhook/video-events`, `api/ws`, `api/jobs`, `api/presets`, `api/openapi.json`)
    /// and their shared state on an `App` or a `Scope`.
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(self.state.clone());
        api_routes(cfg);
        crate::openapi::routes(cfg);
    }

    /// Registers `healthz`, `readyz` and `metrics` (optional for an embedding application,
    /// which usually has its own).
    pub fn configure_ops(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(self.state.clone());
        ops_routes(cfg);
    }

    /// The shared state of the routes.
    pub fn state(&self) -> &web::Data<ApiState> {
        &self.state
    }

    /// Closes every WebSocket with a "shutting down" reason and stops the hub. Call it when
    /// the application stops, before stopping its HTTP server.
    pub fn shutdown(&self) {
        self.state.shutdown.cancel();
    }
}

impl SoraApiBuilder {
    /// Who is calling. Default: this service's bearer API keys ([`ApiKeyAuth`]) in the
    /// service's store.
    pub fn authenticator(mut self, auth: impl Authenticator) -> Self {
        self.auth = Some(Arc::new(auth));
        self
    }

    /// The key of signed download links (every instance behind one address needs the same).
    /// Default: a random key, valid in this process only, with links living one hour.
    pub fn link_signer(mut self, signer: LinkSigner) -> Self {
        self.signer = Some(signer);
        self
    }

    /// The provider's webhook secrets; without any, the webhook route answers 503 and polling
    /// alone finishes jobs.
    pub fn webhook_secrets(mut self, secrets: Vec<WebhookSecret>) -> Self {
        self.webhook_secrets = secrets;
        self
    }

    /// Browser origins, besides the public URL's own, allowed to open WebSockets.
    pub fn allowed_origins(mut self, origins: Vec<String>) -> Self {
        self.allowed_origins = origins;
        self
    }

    /// The largest input-reference image accepted.
    pub fn max_upload_bytes(mut self, bytes: usize) -> Self {
        self.max_upload_bytes = bytes;
        self
    }

    /// Metrics to record into (default: a fresh registry, served by `configure_ops`).
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A token whose cancellation closes the WebSockets (default: a fresh one; see
    /// [`SoraApi::shutdown`]).
    pub fn shutdown_token(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// A development API key that `GET api/dev-key` hands out (emulator mode only).
    pub fn dev_key(mut self, key: Option<String>) -> Self {
        self.dev_key = key;
        self
    }

    /// Builds the API and starts its WebSocket hub on the current tokio runtime.
    ///
    pub fn build(self) -> SoraApi {
        let metrics = self.metrics.unwrap_or_else(|| Arc::new(Metrics::new()));
        let signer = self
            .signer
            .unwrap_or_else(|| LinkSigner::random(std::time::Duration::from_secs(3600)));
        let links = Links::new(self.public_url, signer);
        let hub = Hub::start(
            self.service.clone(),
            links.clone(),
            metrics.clone(),
            self.shutdown.child_token(),
        );
        let auth = self
            .auth
            .unwrap_or_else(|| Arc::new(ApiKeyAuth::new(self.service.store().clone())));
        let webhooks = if self.webhook_secrets.is_empty() {
            None
        } else {
            // A list of already-parsed secrets cannot be invalid; only an empty list can.
            WebhookVerifier::new(self.webhook_secrets).ok()
        };
        SoraApi {
            state: web::Data::new(ApiState {
                service: self.service,
                auth,
                links,
                metrics,
                hub,
                webhooks,
                allowed_origins: self.allowed_origins,
                shutdown: self.shutdown,
                max_upload_bytes: self.max_upload_bytes,
                dev_key: self.dev_key,
            }),
        }
    }
}
