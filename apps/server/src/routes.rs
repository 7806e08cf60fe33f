//! The REST routes. Handlers are thin: extract, parse into domain types, call one service
//! function, map the result.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, ByteRangeSpec, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use sora_core::{JobId, PublicStatus, Variant};
use sora_openai::webhook::{VerifyError, WebhookHeaders, WebhookVerifier};
use sora_service::{CreateRequest, ServiceError, UploadedImage, VideoService, WebhookOutcome};
use sora_store::JobQuery;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthContext, Authenticator};
use crate::dto::{CreatedDto, JobDto, Links};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::ws::{Connection, Hub};

/// The largest JSON body of a create (a 32,000-character prompt is at most 128 KB of UTF-8).
const MAX_JSON_BODY: usize = 256 * 1024;
/// The largest webhook body accepted.
const MAX_WEBHOOK_BODY: usize = 1024 * 1024;
/// The largest text field of a multipart create.
const MAX_TEXT_FIELD: usize = 256 * 1024;

/// Everything the routes need, shared by every worker thread.
pub struct ApiState {
    /// The use cases.
    pub service: VideoService,
    /// Who is calling.
    pub auth: Arc<dyn Authenticator>,
    /// Link builder (public URL and mount prefix, signed downloads).
    pub links: Links,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The WebSocket hub.
    pub hub: Hub,
    /// The webhook verifier; `None` when no secret is configured (the route answers 503).
    pub webhooks: Option<WebhookVerifier>,
    /// Origins besides our own allowed to open WebSockets (`SORA_CORS_ORIGINS`).
    pub allowed_origins: Vec<String>,
    /// Cancelled at shutdown (closes WebSockets with a reason).
    pub shutdown: CancellationToken,
    /// The largest input-reference image.
    pub max_upload_bytes: usize,
    /// In emulator mode only: an API key of the owner `demo`, handed to the demo page by
    /// `GET /api/dev-key` so it works out of the box. `None` with a real provider.
    pub dev_key: Option<String>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

type State = web::Data<ApiState>;

/// Registers the API routes (`/api/...`) on a scope or an app.
pub fn api_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(
        "/api/generate",
        Method::POST,
        web::post().to(generate),
    ))
    .service(resource("/api/status", Method::GET, web::get().to(status)))
    .service(resource(
        "/api/download",
        Method::GET,
        web::get().to(download),
    ))
    .service(resource(
        "/api/webhook/video-events",
        Method::POST,
        web::post().to(webhook),
    ))
    .service(resource("/api/ws", Method::GET, web::get().to(websocket)))
    .service(resource("/api/jobs", Method::GET, web::get().to(list_jobs)))
    .service(
        web::resource("/api/jobs/{jobId}")
            .route(web::get().to(get_job))
            .route(web::delete().to(delete_job))
            .default_service(web::to(|| async { method_not_allowed("GET, DELETE") })),
    )
    .service(resource(
        "/api/presets",
        Method::GET,
        web::get().to(presets),
    ))
    .service(resource(
        "/api/dev-key",
        Method::GET,
        web::get().to(dev_key),
    ));
}

/// Registers the operational routes: `/healthz`, `/readyz`, `/metrics`.
pub fn ops_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz", Method::GET, web::get().to(healthz)))
        .service(resource("/readyz", Method::GET, web::get().to(readyz)))
        .service(resource("/metrics", Method::GET, web::get().to(metrics)));
}

fn resource(path: &str, method: Method, route: actix_web::Route) -> actix_web::Resource {
    let allowed = method.as_str().to_owned();
    web::resource(path)
        .route(route)
        .default_service(web::to(move || {
            let allowed = allowed.clone();
            async move { method_not_allowed(&allowed) }
        }))
}

pub(crate) fn method_not_allowed(allowed: &str) -> HttpResponse {
    let mut res = actix_web::ResponseError::error_response(&ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("This route accepts {allowed}"),
    ));
    if let Ok(v) = HeaderValue::from_str(allowed) {
        res.headers_mut().insert(header::ALLOW, v);
    }
    res
}

/// The query string as pairs.
fn query(req: &HttpRequest) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `renderVersion` may be omitted (it means `v3`); any other value is refused.
fn check_render_version(q: &[(String, String)]) -> Result<(), ApiError> {
    match param(q, "renderVersion") {
        None | Some("v3") => Ok(()),
        Some(other) => Err(ApiError::bad_request(
            "invalid_render_version",
            format!("renderVersion `{other}` is not supported; use v3"),
        )),
    }
}

fn job_id_param(q: &[(String, String)]) -> Result<JobId, ApiError> {
    let raw = param(q, "jobId").filter(|v| !v.is_empty()).ok_or_else(|| {
        ApiError::invalid("jobId", "jobId: the jobId query parameter is required")
    })?;
    parse_job_id(raw)
}

fn parse_job_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse()
        .map_err(|e: sora_core::IdError| ApiError::invalid("jobId", format!("jobId: {e}")))
}

/// Reads a whole body up to `limit` bytes, answering 413 beyond.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("The body is larger than {limit} bytes"),
    )
}

/// The JSON body of `POST /api/generate`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateBody {
    prompt: Option<String>,
    preset: Option<String>,
    model: Option<String>,
    size: Option<String>,
    seconds: Option<serde_json::Value>,
    remix_of: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
}

fn seconds_field(v: Option<serde_json::Value>) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(ApiError::invalid(
            "seconds",
            "seconds: must be a number or a string of digits",
        )),
    }
}

fn required_prompt(prompt: Option<String>) -> Result<String, ApiError> {
    prompt.ok_or_else(|| ApiError::invalid("prompt", "prompt: the prompt is required"))
}

async fn generate(
    req: HttpRequest,
    payload: web::Payload,
    state: State,
) -> Result<HttpResponse, ApiError> {
    let q = query(&req);
    check_render_version(&q)?;
    let owner = state.auth.authenticate(&req, AuthContext::Api).await?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let request = if content_type.starts_with("multipart/form-data") {
        read_multipart(&req, payload, state.max_upload_bytes).await?
    } else if content_type.starts_with("application/json") || content_type.is_empty() {
        let body = read_body(payload, MAX_JSON_BODY).await?;
        let body: GenerateBody = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!("The body is not valid JSON for this route: {e}"),
            )
        })?;
        CreateRequest {
            prompt: required_prompt(body.prompt)?,
            preset: body.preset,
            model: body.model,
            size: body.size,
            seconds: seconds_field(body.seconds)?,
            remix_of: body.remix_of,
            metadata: body.metadata.unwrap_or_default(),
            input_reference: None,
        }
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send application/json or multipart/form-data",
        ));
    };
    let key = req
        .headers()
        .get("idempotency-key")
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::invalid("Idempotency-Key", "Idempotency-Key: must be visible ASCII")
            })
        })
        .transpose()?;
    let created = state.service.create(&owner, request, key).await?;
    let dto = CreatedDto::new(&created.job, &state.links);
    let mut res = HttpResponse::Accepted();
    res.insert_header((header::LOCATION, dto.status_url.clone()));
    if created.replayed {
        res.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(res.json(dto))
}

async fn read_multipart(
    req: &HttpRequest,
    payload: web::Payload,
    max_image: usize,
) -> Result<CreateRequest, ApiError> {
    let mut form = actix_multipart::Multipart::new(req.headers(), payload);
    let mut prompt = None;
    let mut out = CreateRequest::default();
    let bad = |e: actix_multipart::MultipartError| {
        ApiError::bad_request(
            "invalid_multipart",
            format!("The multipart body is malformed: {e}"),
        )
    };
    while let Some(field) = form.next().await {
        let mut field = field.map_err(bad)?;
        let name = field.name().unwrap_or("").to_owned();
        let limit = if name == "inputReference" {
            max_image
        } else {
            MAX_TEXT_FIELD
        };
        let filename = field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .map(str::to_owned);
        let mut data = BytesMut::new();
        while let Some(chunk) = field.try_next().await.map_err(bad)? {
            if data.len() + chunk.len() > limit {
                return Err(if name == "inputReference" {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("inputReference: the image is larger than {limit} bytes"),
                    )
                } else {
                    too_large(limit)
                });
            }
            data.extend_from_slice(&chunk);
        }
        let text = || {
            String::from_utf8(data.to_vec())
                .map_err(|_| ApiError::invalid("body", format!("{name}: not UTF-8 text")))
        };
        match name.as_str() {
            "prompt" => prompt = Some(text()?),
            "preset" => out.preset = Some(text()?),
            "model" => out.model = Some(text()?),
            "size" => out.size = Some(text()?),
            "seconds" => out.seconds = Some(text()?),
            "remixOf" => out.remix_of = Some(text()?),
            "metadata" => {
                out.metadata = serde_json::from_str(&text()?).map_err(|_| {
                    ApiError::invalid("metadata", "metadata: must be a JSON object of strings")
                })?
            }
            "inputReference" => {
                out.input_reference = Some(UploadedImage {
                    filename,
                    data: data.freeze(),
                })
            }
            // Unknown fields are ignored, as in JSON bodies.
            _ => {}
        }
    }
    out.prompt = required_prompt(prompt)?;
    Ok(out)
}

async fn status(req: HttpRequest, state: State) -> Result<HttpResponse, ApiError> {
    let q = query(&req);
    check_render_version(&q)?;
    let id = job_id_param(&q)?;
    let owner = state.auth.authenticate(&req, AuthContext::Api).await?;
    let view = state.service.get(&owner, id).await?;
    Ok(HttpResponse::Ok().json(JobDto::new(&view, &state.links)))
}

async fn get_job(
    req: HttpRequest,
    path: web::Path<String>,
    state: State,
) -> Result<HttpResponse, ApiError> {
    let id = parse_job_id(&path)?;
    let owner = state.auth.authenticate(&req, AuthContext::Api).await?;
    let view = state.service.get(&owner, id).await?;
    Ok(HttpResponse::Ok().json(JobDto::new(&view, &state.links)))
}

async fn list_jobs(req: HttpRequest, state: State) -> Result<HttpResponse, ApiError> {
    let q = query(&req);
    let owner = state.auth.authenticate(&req, AuthContext::Api).await?;
    let status = param(&q, "status")
        .map(|s| {
            PublicStatus::from_str(s).map_err(|_| {
                ApiError::invalid(
                    "status",
                    "status: one of pending, queued, in_progress, completed, failed, cancelled",
                )
            })
        })
        .transpose()?;
    let limit = match param(&q, "limit") {
        None => 20,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", "limit: a whole number from 1 to 100"))?,
    };
    let query = JobQuery {
        status,
        limit,
        cursor: param(&q, "cursor")
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
    };
    let page = state.service.list(&owner, &query).await?;
    let mut jobs = Vec::with_capacity(page.jobs.len());
    for job in page.jobs {
        // A listed job's files are reported deleted by its status answer; the list keeps to
        // one query.
        let view = sora_service::JobView {
            job,
            files_deleted: false,
        };
        jobs.push(JobDto::new(&view, &state.links));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "jobs": jobs,
        "nextCursor": page.next_cursor,
    })))
}

async fn delete_job(
    req: HttpRequest,
    path: web::Path<String>,
    state: State,
) -> Result<HttpResponse, ApiError> {
    let id = parse_job_id(&path)?;
    let owner = state.auth.authenticate(&req, AuthContext::Api).await?;
    let outcome = state.service.cancel(&owner, id).await?;
    let view = sora_service::JobView {
        job: outcome.job,
        files_deleted: outcome.files_deleted,
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "job": JobDto::new(&view, &state.links),
        "cancelled": outcome.cancelled_now,
        "filesDeleted": outcome.files_deleted,
        "upstream": {
            "outcome": outcome.upstream.as_str(),
            "message": outcome.upstream.message(),
        },
    })))
}

/// The development credential, in emulator mode only (a real deployment answers 404).
async fn dev_key(state: State) -> Result<HttpResponse, ApiError> {
    match &state.dev_key {
        Some(key) => Ok(HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({"apiKey": key, "owner": "demo", "emulator": true}))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "No development credential: the server runs against a real provider",
        )),
    }
}

async fn presets(state: State) -> HttpResponse {
    HttpResponse::Ok().json(crate::dto::CatalogueDto::new(
        &state.service.config().catalogue,
    ))
}

async fn download(req: HttpRequest, state: State) -> Result<HttpResponse, ApiError> {
    let q = query(&req);
    check_render_version(&q)?;
    let id = job_id_param(&q)?;
    let variant = match param(&q, "variant") {
        None | Some("") => Variant::Video,
        Some(v) => v.parse().map_err(|_| {
            ApiError::invalid("variant", "variant: one of video, thumbnail, spritesheet")
        })?,
    };
    // A signed link stands in for the credential (a <video src> cannot send headers).
    let owner = match param(&q, "signature") {
        Some(signature) => {
            let expires = param(&q, "expires")
                .and_then(|e| e.parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::FORBIDDEN,
                        "invalid_link",
                        "The download link has no valid expiry",
                    )
                })?;
            state
                .links
                .signer()
                .verify(
                    id,
                    variant,
                    expires,
                    signature,
                    chrono::Utc::now().timestamp(),
                )
                .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, "invalid_link", e.to_string()))?;
            None
        }
        None => Some(state.auth.authenticate(&req, AuthContext::Api).await?),
    };
    let file = state.service.find_file(owner.as_ref(), id, variant).await?;
    let etag = file
        .etag
        .clone()
        .map(|e| {
            if e.starts_with('"') || e.starts_with("W/") {
                e
            } else {
                format!("\"{e}\"")
            }
        })
        .unwrap_or_else(|| format!("\"{id}-{variant}-{}\"", file.size));

    if let Some(inm) = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && (inm.trim() == "*" || inm.split(',').any(|t| t.trim() == etag))
    {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }

    let size = file.size;
    let range = match req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        None => None,
        Some(raw) => match header::Range::from_str(raw) {
            // One range is served as 206; several are served whole (allowed by RFC 9110).
            Ok(header::Range::Bytes(specs)) if specs.len() == 1 => {
                match satisfiable(&specs[0], size) {
                    Some(r) => Some(r),
                    None => {
                        return Ok(HttpResponse::build(StatusCode::RANGE_NOT_SATISFIABLE)
                            .insert_header((header::CONTENT_RANGE, format!("bytes */{size}")))
                            .json(serde_json::json!({"error": {
                                "code": "range_not_satisfiable",
                                "message": format!("The file has {size} bytes"),
                            }})));
                    }
                }
            }
            _ => None,
        },
    };
    let read = state.service.open_file(id, &file, range.clone()).await?;
    let len = read.range.end - read.range.start;
    let disposition = format!(
        "inline; filename=\"{id}-{variant}.{}\"",
        variant.extension()
    );
    let mut res = if range.is_some() {
        let mut b = HttpResponse::PartialContent();
        b.insert_header((
            header::CONTENT_RANGE,
            format!(
                "bytes {}-{}/{size}",
                read.range.start,
                read.range.end.saturating_sub(1)
            ),
        ));
        b
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::CONTENT_TYPE, file.content_type.clone()))
        .insert_header((header::ETAG, etag))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CONTENT_DISPOSITION, disposition))
        .insert_header((header::CACHE_CONTROL, "private, max-age=3600"));
    Ok(res.body(SizedStream::new(len, read.stream)))
}

fn satisfiable(spec: &ByteRangeSpec, size: u64) -> Option<std::ops::Range<u64>> {
    spec.to_satisfiable_range(size).map(|(a, b)| a..b + 1)
}

async fn webhook(
    req: HttpRequest,
    payload: web::Payload,
    state: State,
) -> Result<HttpResponse, ApiError> {
    let Some(verifier) = &state.webhooks else {
        state.metrics.webhook("disabled");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks_disabled",
            "No webhook secret is configured (OPENAI_WEBHOOK_SECRET); jobs finish by polling",
        ));
    };
    let body = read_body(payload, MAX_WEBHOOK_BODY).await?;
    let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let headers = WebhookHeaders {
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
    };
    let verified = match verifier.verify(&headers, &body, SystemTime::now()) {
        Ok(v) => v,
        Err(e) => {
            state.metrics.webhook("rejected");
            return Err(match e {
                VerifyError::MissingHeader(_) | VerifyError::InvalidTimestamp => {
                    ApiError::bad_request("invalid_webhook", e.to_string())
                }
                _ => ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", e.to_string()),
            });
        }
    };
    match state.service.accept_webhook(&verified.id, &body).await {
        Ok(outcome) => {
            state.metrics.webhook(match outcome {
                WebhookOutcome::Recorded { .. } => "recorded",
                WebhookOutcome::Duplicate => "duplicate",
                WebhookOutcome::Ignored { .. } => "ignored",
            });
            Ok(HttpResponse::Ok().json(serde_json::json!({"received": true})))
        }
        Err(ServiceError::Invalid { message, .. }) => {
            state.metrics.webhook("rejected");
            Err(ApiError::bad_request("invalid_webhook", message))
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether a browser page from `origin` may open a WebSocket: our own origin, or one listed in
/// `SORA_CORS_ORIGINS`. Non-browser clients send no `Origin` and are not checked.
fn origin_allowed(req: &HttpRequest, allowed: &[String], links: &Links) -> bool {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    let origin = origin.trim_end_matches('/');
    if allowed.iter().any(|a| a == origin || a == "*") {
        return true;
    }
    let conn = req.connection_info();
    let own = [
        format!("{}://{}", conn.scheme(), conn.host()),
        links.origin(),
    ];
    own.iter().any(|o| o == origin)
}

async fn websocket(
    req: HttpRequest,
    payload: web::Payload,
    state: State,
) -> Result<HttpResponse, ApiError> {
    if !origin_allowed(&req, &state.allowed_origins, &state.links) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "This origin may not open WebSockets here (see SORA_CORS_ORIGINS)",
        ));
    }
    let q = query(&req);
    let mut initial = Vec::new();
    for (k, v) in &q {
        if k == "jobId" {
            for part in v.split(',').filter(|p| !p.is_empty()) {
                initial.push(parse_job_id(part)?);
            }
        }
    }
    let owner = state
        .auth
        .authenticate(&req, AuthContext::WebSocket)
        .await?;
    let conn = Connection {
        owner,
        hub: state.hub.clone(),
        service: state.service.clone(),
        links: state.links.clone(),
        metrics: state.metrics.clone(),
        shutdown: state.shutdown.clone(),
    };
    conn.start(&req, payload, initial)
        .map_err(|e| ApiError::bad_request("websocket_handshake", e.to_string()))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(state: State) -> Result<HttpResponse, ApiError> {
    match state.service.store().ping().await {
        Ok(()) => Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "The database is not reachable",
            ))
        }
    }
}

async fn metrics(state: State) -> HttpResponse {
    match state.service.store().count_by_status().await {
        Ok(counts) => state.metrics.set_job_counts(&counts),
        Err(e) => tracing::warn!(error = %e, "could not count jobs for metrics"),
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.encode())
}
