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
use crate::dto::{CreatedDto, DeletedDto, JobDto, JobListDto, Links, UpstreamDto};
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

/// How long a handler may take before it answers `503 request_timeout`. Downloads and
/// WebSockets are not limited by it: their handlers answer as soon as the stream is open.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs a handler's work with [`REQUEST_TIMEOUT`].
async fn timed(
    work: impl std::future::Future<Output = Result<HttpResponse, ApiError>>,
) -> Result<HttpResponse, ApiError> {
    timed_with(REQUEST_TIMEOUT, work).await
}

async fn timed_with(
    limit: std::time::Duration,
    work: impl std::future::Future<Output = Result<HttpResponse, ApiError>>,
) -> Result<HttpResponse, ApiError> {
    match tokio::time::timeout(limit, work).await {
        Ok(answer) => answer,
        Err(_) => {
            tracing::warn!(limit_secs = limit.as_secs(), "a request took too long");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "request_timeout",
                "The request took too long; try again",
            ))
        }
    }
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
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerateBody {
    /// What to generate (required): 1 to 32,000 characters.
    #[schema(required)]
    prompt: Option<String>,
    /// A preset name (`GET /api/presets`); default: the catalogue's default preset.
    preset: Option<String>,
    /// A model id; overrides the preset's.
    model: Option<String>,
    /// `WIDTHxHEIGHT`; overrides the preset's.
    size: Option<String>,
    /// Seconds, as a string or a number; overrides the preset's.
    #[schema(value_type = Option<String>, example = "8")]
    seconds: Option<serde_json::Value>,
    /// The jobId of a completed job of the same owner to remix.
    remix_of: Option<String>,
    /// Your own labels, returned as given (at most 16).
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

#[utoipa::path(post, path = "/api/generate", tag = "jobs",
    summary = "Create a job: answers at once and never waits on the provider",
    params(("renderVersion" = Option<String>, Query, description = "`v3` (the default); anything else is refused"),
        ("Idempotency-Key" = Option<String>, Header, description = "the same key and body return the first answer again; another body is 409")),
    request_body(content((GenerateBody = "application/json"), (crate::openapi::GenerateForm = "multipart/form-data"))),
    responses((status = 202, description = "Accepted; `Location` is the status URL; `Idempotent-Replayed: true` on a replay", body = CreatedDto),
        (status = 400, description = "Invalid input", body = crate::openapi::ErrorBody), (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another body", body = crate::openapi::ErrorBody), (status = 413, description = "Body or image too large", body = crate::openapi::ErrorBody),
        (status = 415, description = "Neither JSON nor multipart", body = crate::openapi::ErrorBody)))]
pub(crate) async fn generate(
    req: HttpRequest,
    payload: web::Payload,
    state: State,
) -> Result<HttpResponse, ApiError> {
    timed(async move {
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
    })
    .await
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

#[utoipa::path(get, path = "/api/status", tag = "jobs", summary = "Read one job",
    params(("jobId" = String, Query), ("renderVersion" = Option<String>, Query)),
    responses((status = 200, description = "The job", body = JobDto), (status = 400, description = "Bad jobId", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody), (status = 404, description = "No such job for this caller", body = crate::openapi::ErrorBody)))]
pub(crate) async fn status(req: HttpRequest, state: State) -> Result<HttpResponse, ApiError> {
    timed(async move {
        let q = query(&req);
        check_render_version(&q)?;
        read_job(&req, job_id_param(&q)?, &state).await
    })
    .await
}

/// One of the caller's jobs, as `GET /api/status` and `GET /api/jobs/{jobId}` answer it.
async fn read_job(req: &HttpRequest, id: JobId, state: &State) -> Result<HttpResponse, ApiError> {
    let owner = state.auth.authenticate(req, AuthContext::Api).await?;
    let view = state.service.get(&owner, id).await?;
    Ok(HttpResponse::Ok().json(JobDto::new(&view, &state.links)))
}

#[utoipa::path(get, path = "/api/jobs/{jobId}", tag = "jobs", summary = "Read one job",
    params(("jobId" = String, Path)),
    responses((status = 200, description = "The job", body = JobDto), (status = 404, description = "No such job for this caller", body = crate::openapi::ErrorBody)))]
pub(crate) async fn get_job(
    req: HttpRequest,
    path: web::Path<String>,
    state: State,
) -> Result<HttpResponse, ApiError> {
    timed(async move { read_job(&req, parse_job_id(&path)?, &state).await }).await
}

#[utoipa::path(get, path = "/api/jobs", tag = "jobs", summary = "The caller's jobs, newest first",
    params(("status" = Option<crate::openapi::Status>, Query), ("limit" = Option<u32>, Query, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page")),
    responses((status = 200, description = "A page", body = JobListDto), (status = 400, description = "Bad parameter", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody)))]
pub(crate) async fn list_jobs(req: HttpRequest, state: State) -> Result<HttpResponse, ApiError> {
    timed(async move {
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
            let files_deleted = page.purged.contains(&job.id());
            let view = sora_service::JobView { job, files_deleted };
            jobs.push(JobDto::new(&view, &state.links));
        }
        Ok(HttpResponse::Ok().json(JobListDto {
            jobs,
            next_cursor: page.next_cursor,
        }))
    })
    .await
}

#[utoipa::path(delete, path = "/api/jobs/{jobId}", tag = "jobs",
    summary = "Cancel a job, or delete a finished job's files; asks the provider to delete its copy",
    params(("jobId" = String, Path)),
    responses((status = 200, description = "What was done, here and upstream", body = DeletedDto),
        (status = 404, description = "No such job for this caller", body = crate::openapi::ErrorBody), (status = 409, description = "The job kept changing; retry", body = crate::openapi::ErrorBody)))]
pub(crate) async fn delete_job(
    req: HttpRequest,
    path: web::Path<String>,
    state: State,
) -> Result<HttpResponse, ApiError> {
    timed(async move {
        let id = parse_job_id(&path)?;
        let owner = state.auth.authenticate(&req, AuthContext::Api).await?;
        let outcome = state.service.cancel(&owner, id).await?;
        let view = sora_service::JobView {
            job: outcome.job,
            files_deleted: outcome.files_deleted,
        };
        Ok(HttpResponse::Ok().json(DeletedDto {
            job: JobDto::new(&view, &state.links),
            cancelled: outcome.cancelled_now,
            files_deleted: outcome.files_deleted,
            upstream: UpstreamDto {
                outcome: outcome.upstream.as_str(),
                message: outcome.upstream.message(),
            },
        }))
    })
    .await
}

/// The development credential, in emulator mode only (a real deployment answers 404).
#[utoipa::path(get, path = "/api/dev-key", tag = "operations", security(()),
    summary = "Emulator mode only: an API key of the owner `demo`, valid while the process runs",
    responses((status = 200, description = "The key", body = crate::openapi::DevKeyDoc), (status = 404, description = "Not in emulator mode", body = crate::openapi::ErrorBody)))]
pub(crate) async fn dev_key(state: State) -> Result<HttpResponse, ApiError> {
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

#[utoipa::path(get, path = "/api/presets", tag = "jobs", security(()),
    summary = "The models, sizes, durations and presets on offer",
    responses((status = 200, description = "The catalogue", body = crate::dto::CatalogueDto)))]
pub(crate) async fn presets(state: State) -> HttpResponse {
    HttpResponse::Ok().json(crate::dto::CatalogueDto::new(
        &state.service.config().catalogue,
    ))
}

#[utoipa::path(get, path = "/api/download", tag = "jobs", security(("bearer" = []), ()),
    summary = "Download a finished file: streamed, with Range, ETag and Content-Disposition",
    params(("jobId" = String, Query), ("renderVersion" = Option<String>, Query),
        ("variant" = Option<String>, Query, description = "`video` (default), `thumbnail` or `spritesheet`"),
        ("expires" = Option<i64>, Query, description = "signed links: the expiry"), ("signature" = Option<String>, Query, description = "signed links: the signature; replaces the credential"),
        ("Range" = Option<String>, Header)),
    responses((status = 200, description = "The file", content_type = "application/octet-stream"), (status = 206, description = "A byte range"),
        (status = 304, description = "Not modified (If-None-Match)"), (status = 403, description = "Invalid or expired signed link", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such job or variant", body = crate::openapi::ErrorBody), (status = 409, description = "Not completed", body = crate::openapi::ErrorBody),
        (status = 410, description = "Files deleted", body = crate::openapi::ErrorBody), (status = 416, description = "Range not satisfiable", body = crate::openapi::ErrorBody)))]
pub(crate) async fn download(req: HttpRequest, state: State) -> Result<HttpResponse, ApiError> {
    timed(async move {
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
                    .map_err(|e| {
                        ApiError::new(StatusCode::FORBIDDEN, "invalid_link", e.to_string())
                    })?;
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
    })
    .await
}

fn satisfiable(spec: &ByteRangeSpec, size: u64) -> Option<std::ops::Range<u64>> {
    spec.to_satisfiable_range(size).map(|(a, b)| a..b + 1)
}

#[utoipa::path(post, path = "/api/webhook/video-events", tag = "webhooks", security(()),
    summary = "The provider's signed webhook (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature)",
    request_body(content = String, content_type = "application/json", description = "the event, verified on the raw bytes"),
    responses((status = 200, description = "Recorded, duplicate or ignored", body = crate::openapi::WebhookAck),
        (status = 400, description = "Malformed body or missing headers", body = crate::openapi::ErrorBody), (status = 401, description = "Bad or stale signature", body = crate::openapi::ErrorBody),
        (status = 503, description = "No webhook secret configured", body = crate::openapi::ErrorBody)))]
pub(crate) async fn webhook(
    req: HttpRequest,
    payload: web::Payload,
    state: State,
) -> Result<HttpResponse, ApiError> {
    timed(async move {
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
                    _ => {
                        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", e.to_string())
                    }
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
    })
    .await
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

#[utoipa::path(get, path = "/api/ws", tag = "jobs",
    summary = "WebSocket: subscribe to jobs; a snapshot on subscribe, then one `progress` message per change (see docs/api.md)",
    params(("jobId" = Option<String>, Query, description = "jobs to subscribe to at once (repeatable or comma-separated)"),
        ("token" = Option<String>, Query, description = "the API key, for browsers, which cannot set headers on a WebSocket")),
    responses((status = 101, description = "Switching protocols; messages are `ProgressMessage`", body = crate::dto::ProgressMessage),
        (status = 400, description = "Not a WebSocket handshake, or a bad jobId", body = crate::openapi::ErrorBody), (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "Origin not allowed", body = crate::openapi::ErrorBody)))]
pub(crate) async fn websocket(
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
        metrics: state.metrics.clone(),
        shutdown: state.shutdown.clone(),
    };
    conn.start(&req, payload, initial)
        .map_err(|e| ApiError::bad_request("websocket_handshake", e.to_string()))
}

#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), summary = "Liveness",
    responses((status = 200, description = "ok", body = crate::openapi::HealthDoc)))]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), summary = "Readiness: the database answers",
    responses((status = 200, description = "ready", body = crate::openapi::HealthDoc), (status = 503, description = "not ready", body = crate::openapi::ErrorBody)))]
pub(crate) async fn readyz(state: State) -> Result<HttpResponse, ApiError> {
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

#[utoipa::path(get, path = "/metrics", tag = "operations", security(()), summary = "Prometheus metrics",
    responses((status = 200, description = "Text exposition format", content_type = "text/plain")))]
pub(crate) async fn metrics(state: State) -> HttpResponse {
    match state.service.store().count_by_status().await {
        Ok(counts) => state.metrics.set_job_counts(&counts),
        Err(e) => tracing::warn!(error = %e, "could not count jobs for metrics"),
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.encode())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_handler_that_takes_too_long_answers_503_request_timeout() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(HttpResponse::Ok().finish())
        };
        let err = timed_with(Duration::from_millis(20), slow)
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.code(), "request_timeout");
        let fast = async { Ok(HttpResponse::Ok().finish()) };
        assert!(timed_with(Duration::from_millis(20), fast).await.is_ok());
    }
}
