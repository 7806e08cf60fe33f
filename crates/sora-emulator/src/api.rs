//! The HTTP surface: `/v1/videos` and friends, bearer authentication, `x-request-id`, OpenAI
//! error bodies.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_multipart::Multipart;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::EmulatorConfig;
use crate::faults::{JobFaults, PromptFaults};
use crate::media::{MediaVariant, image_kind};
use crate::state::{ContentError, CreateFault, NewVideo, Status, Store, VideoObject, new_id};

/// The longest prompt the API accepts, in characters.
pub const MAX_PROMPT_CHARS: usize = 32_000;
/// The largest JSON body accepted.
const MAX_JSON_BYTES: usize = 16 * 1024 * 1024;
/// The largest multipart part accepted.
const MAX_PART_BYTES: usize = 16 * 1024 * 1024;

/// The state the handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub config: EmulatorConfig,
}

impl Shared {
    /// The store; a panic while holding the lock cannot leave it half-updated in a way that
    /// matters to an emulator, so a poisoned lock is simply taken over.
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Mounts the API under `/v1`.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .route("/videos", web::post().to(create))
            .route("/videos", web::get().to(list))
            .route("/videos/{id}", web::get().to(retrieve))
            .route("/videos/{id}", web::delete().to(delete))
            .route("/videos/{id}/remix", web::post().to(remix))
            .route("/videos/{id}/content", web::get().to(content)),
    )
    .default_service(web::to(unknown_route));
}

/// The middleware of every request: the global response delay, bearer authentication and the
/// `x-request-id` header (on errors too).
pub(crate) async fn frame_fn(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let request_id = new_id("req");
    let shared = req.app_data::<web::Data<Shared>>().cloned();
    let mut outcome = Ok(());
    if let Some(shared) = &shared {
        let delay = shared.store().faults().response_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        outcome = authenticate(
            req.headers().get(header::AUTHORIZATION),
            shared.config.api_key.as_ref(),
        );
    }
    let method = req.method().clone();
    let path = req.path().to_owned();
    let mut res = match outcome {
        Ok(()) => next.call(req).await?.map_into_left_body(),
        Err(e) => req.into_response(e.error_response()).map_into_right_body(),
    };
    tracing::debug!(%method, %path, status = res.status().as_u16(), %request_id, "request");
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(header::HeaderName::from_static("x-request-id"), value);
    }
    Ok(res)
}

fn authenticate(
    value: Option<&HeaderValue>,
    key: Option<&secrecy::SecretString>,
) -> Result<(), ApiError> {
    let token = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key. You need to provide your API key in an Authorization \
             header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        ));
    };
    match key {
        Some(key) if key.expose_secret() != token => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
        )
        .code("invalid_api_key")),
        _ => Ok(()),
    }
}

/// An error answer with OpenAI's body: `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<String>,
    retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
            retry_after: None,
        }
    }

    fn invalid(param: &str, code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
            .param(param)
            .code(code)
    }

    fn not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("Video with id '{id}' not found."),
        )
    }

    fn param(mut self, param: &str) -> Self {
        self.param = Some(param.to_owned());
        self
    }

    fn code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    fn kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }

    fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(delay) = self.retry_after {
            let secs = delay.as_millis().div_ceil(1000).max(1);
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
            res.insert_header(("retry-after-ms", delay.as_millis().to_string()));
        }
        res.json(ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code.as_deref(),
            },
        })
    }
}

async fn unknown_route(req: HttpRequest) -> HttpResponse {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Invalid URL ({} {})", req.method(), req.path()),
    )
    .error_response()
}

/// A create request before validation.
#[derive(Debug, Default)]
struct CreateInput {
    prompt: Option<String>,
    model: Option<String>,
    size: Option<String>,
    seconds: Option<String>,
}

async fn create(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
) -> Result<HttpResponse, ApiError> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("multipart/form-data"));
    let input = if is_multipart {
        read_multipart(Multipart::new(req.headers(), payload)).await?
    } else {
        read_json(
            payload,
            &["prompt", "model", "size", "seconds", "input_reference"],
        )
        .await?
    };
    let config = &shared.config;
    let prompt = validate_prompt(input.prompt)?;
    let model = match input.model {
        None => config.default_model.clone(),
        Some(m) if m.trim().is_empty() => {
            return Err(ApiError::invalid(
                "model",
                "invalid_value",
                "Invalid value for 'model': it must not be empty.",
            ));
        }
        Some(m) => m,
    };
    let seconds = one_of("seconds", input.seconds, &config.allowed_seconds)?;
    let size = one_of("size", input.size, &config.allowed_sizes)?;
    start_video(
        &shared,
        NewVideo {
            model,
            prompt,
            size,
            seconds,
            remixed_from: None,
            faults: JobFaults::default(),
        },
    )
    .await
}

/// Applies the create faults and the `[delay]` marker, then stores the job.
async fn start_video(shared: &Shared, mut new: NewVideo) -> Result<HttpResponse, ApiError> {
    let markers = PromptFaults::parse(&new.prompt);
    let outcome = {
        let mut store = shared.store();
        new.faults = JobFaults::combine(&markers, store.faults());
        match store.create_fault(&new.prompt, &markers) {
            Some(fault) => Err(fault),
            None => Ok(store.insert(new)),
        }
    };
    if let Some(delay) = markers.delay {
        tokio::time::sleep(delay).await;
    }
    match outcome {
        Ok(video) => {
            tracing::info!(video_id = %video.id, model = %video.model, "video created");
            Ok(HttpResponse::Ok().json(video))
        }
        Err(fault) => Err(fault_answer(fault, shared.config.retry_after)),
    }
}

/// The error answer of an injected create fault.
fn fault_answer(fault: CreateFault, retry_after: Duration) -> ApiError {
    match fault {
        CreateFault::RateLimited => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit reached for requests (injected by the emulator). Please try again later.",
        )
        .kind("requests")
        .code("rate_limit_exceeded")
        .retry_after(retry_after),
        CreateFault::Quota => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "You exceeded your current quota, please check your plan and billing details \
             (injected by the emulator).",
        )
        .kind("insufficient_quota")
        .code("insufficient_quota"),
        CreateFault::ServerError(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let err = ApiError::new(
                status,
                "The server had an error while processing your request (injected by the \
                 emulator).",
            )
            .kind("server_error");
            if status == StatusCode::SERVICE_UNAVAILABLE {
                err.retry_after(retry_after)
            } else {
                err
            }
        }
    }
}

fn validate_prompt(prompt: Option<String>) -> Result<String, ApiError> {
    let Some(prompt) = prompt else {
        return Err(ApiError::invalid(
            "prompt",
            "missing_required_parameter",
            "Missing required parameter: 'prompt'.",
        ));
    };
    let chars = prompt.chars().count();
    if prompt.trim().is_empty() {
        return Err(ApiError::invalid(
            "prompt",
            "string_too_short",
            "Invalid 'prompt': string too short. Expected a string with minimum length 1.",
        ));
    }
    if chars > MAX_PROMPT_CHARS {
        return Err(ApiError::invalid(
            "prompt",
            "string_above_max_length",
            format!(
                "Invalid 'prompt': string too long. Expected a string with maximum length \
                 {MAX_PROMPT_CHARS}, but got a string with length {chars} instead."
            ),
        ));
    }
    Ok(prompt)
}

fn one_of(param: &str, value: Option<String>, allowed: &[String]) -> Result<String, ApiError> {
    let Some(value) = value else {
        return Ok(allowed.first().cloned().unwrap_or_default());
    };
    if allowed.contains(&value) {
        return Ok(value);
    }
    let list = allowed
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(ApiError::invalid(
        param,
        "invalid_value",
        format!("Invalid value: '{value}'. Supported values are: {list}."),
    ))
}

/// Reads a JSON object body, refusing unknown parameters and non-string values like the real
/// API does.
async fn read_json(payload: web::Payload, known: &[&str]) -> Result<CreateInput, ApiError> {
    let body = payload
        .to_bytes_limited(MAX_JSON_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The request body is too large.",
            )
        })?
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "Could not read the request body."))?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("We could not parse the JSON body of your request: {e}"),
        )
    })?;
    let Value::Object(map) = value else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "The request body must be a JSON object.",
        ));
    };
    let mut input = CreateInput::default();
    for (key, value) in map {
        if !known.contains(&key.as_str()) {
            return Err(ApiError::invalid(
                &key,
                "unknown_parameter",
                format!("Unknown parameter: '{key}'."),
            ));
        }
        if value.is_null() {
            continue;
        }
        if key == "input_reference" {
            validate_json_reference(value)?;
            continue;
        }
        let Value::String(text) = value else {
            return Err(ApiError::invalid(
                &key,
                "invalid_type",
                format!(
                    "Invalid type for '{key}': expected a string, but got {} instead.",
                    json_type(&value)
                ),
            ));
        };
        match key.as_str() {
            "prompt" => input.prompt = Some(text),
            "model" => input.model = Some(text),
            "size" => input.size = Some(text),
            "seconds" => input.seconds = Some(text),
            _ => {}
        }
    }
    Ok(input)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `input_reference` in JSON: `{"image_url": "https://..." | "data:image/...;base64,..."}` or
/// `{"file_id": "file-..."}`. A data URL must hold a JPEG, PNG or WebP image.
fn validate_json_reference(value: Value) -> Result<(), ApiError> {
    let invalid = |msg: &str| ApiError::invalid("input_reference", "invalid_value", msg);
    let Value::Object(map) = value else {
        return Err(invalid(
            "Invalid 'input_reference': expected an object with 'image_url' or 'file_id'.",
        ));
    };
    let field = |map: &Map<String, Value>, name: &str| {
        map.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned)
    };
    if let Some(url) = field(&map, "image_url") {
        if let Some(rest) = url.strip_prefix("data:") {
            let (_, data) = rest.split_once(";base64,").ok_or_else(|| {
                invalid("Invalid 'input_reference.image_url': not a base64 data URL.")
            })?;
            let bytes = STANDARD
                .decode(data.trim())
                .map_err(|_| invalid("Invalid 'input_reference.image_url': bad base64."))?;
            check_image(&bytes)?;
        } else if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(invalid(
                "Invalid 'input_reference.image_url': expected an http(s) or data URL.",
            ));
        }
        return Ok(());
    }
    if field(&map, "file_id").is_some() {
        return Ok(());
    }
    Err(invalid(
        "Invalid 'input_reference': expected an object with 'image_url' or 'file_id'.",
    ))
}

fn check_image(bytes: &[u8]) -> Result<(), ApiError> {
    image_kind(bytes).map(|_| ()).ok_or_else(|| {
        ApiError::invalid(
            "input_reference",
            "invalid_image_format",
            "Invalid file format for 'input_reference'. Supported formats: image/jpeg, \
             image/png, image/webp.",
        )
    })
}

/// Reads a `multipart/form-data` create: text fields and an `input_reference` file.
async fn read_multipart(mut form: Multipart) -> Result<CreateInput, ApiError> {
    let mut input = CreateInput::default();
    while let Some(field) = form.next().await {
        let mut field = field.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("Malformed multipart body: {e}"),
            )
        })?;
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = match field.bytes(MAX_PART_BYTES).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Malformed multipart body: {e}"),
                ));
            }
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("The part '{name}' is too large."),
                ));
            }
        };
        if name == "input_reference" {
            check_image(&bytes)?;
            continue;
        }
        let text = || {
            String::from_utf8(bytes.to_vec()).map_err(|_| {
                ApiError::invalid(
                    &name,
                    "invalid_type",
                    format!("'{name}' must be UTF-8 text."),
                )
            })
        };
        match name.as_str() {
            "prompt" => input.prompt = Some(text()?),
            "model" => input.model = Some(text()?),
            "size" => input.size = Some(text()?),
            "seconds" => input.seconds = Some(text()?),
            _ => {
                return Err(ApiError::invalid(
                    &name,
                    "unknown_parameter",
                    format!("Unknown parameter: '{name}'."),
                ));
            }
        }
    }
    Ok(input)
}

/// Sleeps for the `[delay:MS]` marker of a job, if it has one.
async fn job_delay(shared: &Shared, id: &str) {
    let delay = shared.store().delay_of(id);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

async fn retrieve(
    path: web::Path<String>,
    shared: web::Data<Shared>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    job_delay(&shared, &id).await;
    let video = shared.store().get(&id, Instant::now());
    video
        .map(|v| HttpResponse::Ok().json(v))
        .ok_or_else(|| ApiError::not_found(&id))
}

#[derive(Debug, Deserialize)]
struct ListParams {
    after: Option<String>,
    limit: Option<String>,
    order: Option<String>,
}

#[derive(Debug, Serialize)]
struct ListPage {
    object: &'static str,
    data: Vec<VideoObject>,
    first_id: Option<String>,
    last_id: Option<String>,
    has_more: bool,
}

async fn list(req: HttpRequest, shared: web::Data<Shared>) -> Result<HttpResponse, ApiError> {
    let params = web::Query::<ListParams>::from_query(req.query_string())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("Invalid query: {e}")))?
        .into_inner();
    let limit = match params.limit.as_deref() {
        None => 20,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| *l <= 100)
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    "invalid_value",
                    format!("Invalid 'limit': expected an integer between 0 and 100, got '{l}'."),
                )
            })?,
    };
    let descending = match params.order.as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(o) => {
            return Err(ApiError::invalid(
                "order",
                "invalid_value",
                format!("Invalid value: '{o}'. Supported values are: 'asc' and 'desc'."),
            ));
        }
    };
    let mut all = shared.store().all(Instant::now());
    if descending {
        all.reverse();
    }
    let start = match params.after.as_deref() {
        None => 0,
        Some(after) => {
            all.iter().position(|v| v.id == after).ok_or_else(|| {
                ApiError::invalid(
                    "after",
                    "invalid_value",
                    format!("Invalid 'after': no video with id '{after}'."),
                )
            })? + 1
        }
    };
    let rest = all.len().saturating_sub(start);
    let data: Vec<VideoObject> = all.into_iter().skip(start).take(limit).collect();
    Ok(HttpResponse::Ok().json(ListPage {
        object: "list",
        first_id: data.first().map(|v| v.id.clone()),
        last_id: data.last().map(|v| v.id.clone()),
        has_more: rest > data.len(),
        data,
    }))
}

async fn delete(
    path: web::Path<String>,
    shared: web::Data<Shared>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    job_delay(&shared, &id).await;
    if shared.store().delete(&id) {
        tracing::info!(video_id = %id, "video deleted");
        Ok(HttpResponse::Ok().json(serde_json::json!({
            "id": id,
            "object": "video.deleted",
            "deleted": true,
        })))
    } else {
        Err(ApiError::not_found(&id))
    }
}

async fn remix(
    path: web::Path<String>,
    payload: web::Payload,
    shared: web::Data<Shared>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let input = read_json(payload, &["prompt"]).await?;
    let prompt = validate_prompt(input.prompt)?;
    let source = shared
        .store()
        .get(&id, Instant::now())
        .ok_or_else(|| ApiError::not_found(&id))?;
    if source.status != Status::Completed {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Video '{id}' cannot be remixed: its status is {}, and only completed videos \
                 can be remixed.",
                source.status.as_str()
            ),
        )
        .code("invalid_video_state"));
    }
    start_video(
        &shared,
        NewVideo {
            model: source.model,
            prompt,
            size: source.size,
            seconds: source.seconds,
            remixed_from: Some(id),
            faults: JobFaults::default(),
        },
    )
    .await
}

#[derive(Debug, Deserialize)]
struct ContentParams {
    variant: Option<String>,
}

async fn content(
    req: HttpRequest,
    path: web::Path<String>,
    shared: web::Data<Shared>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let params = web::Query::<ContentParams>::from_query(req.query_string())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("Invalid query: {e}")))?
        .into_inner();
    let variant = match params.variant.as_deref() {
        None => MediaVariant::Video,
        Some(v) => MediaVariant::parse(v).ok_or_else(|| {
            ApiError::invalid(
                "variant",
                "invalid_value",
                format!(
                    "Invalid value: '{v}'. Supported values are: 'video', 'thumbnail', and \
                     'spritesheet'."
                ),
            )
        })?,
    };
    job_delay(&shared, &id).await;
    let ready = shared.store().content(&id, Instant::now());
    match ready {
        Ok(()) => Ok(HttpResponse::Ok()
            .content_type(variant.content_type())
            .body(bytes::Bytes::from_static(variant.bytes()))),
        Err(ContentError::NotFound) => Err(ApiError::not_found(&id)),
        Err(ContentError::NotReady(status)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "Video '{id}' is not ready yet: its status is {}. Try again when it is completed.",
                status.as_str()
            ),
        )
        .code("video_not_ready")),
        Err(ContentError::Failed) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Video '{id}' failed to generate and has no content."),
        )
        .code("video_failed")),
        Err(ContentError::Expired) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("The content of video '{id}' has expired and can no longer be downloaded."),
        )
        .code("video_expired")),
    }
}
