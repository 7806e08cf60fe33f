//! [`OpenAiClient`]: the [`VideoProvider`] for the OpenAI Videos API and compatible gateways.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sora_core::{Variant, VideoId};
use url::Url;

use crate::backoff::Backoff;
use crate::error::ProviderError;
use crate::provider::VideoProvider;
use crate::types::{Content, CreateVideo, DeletedVideo, ListQuery, RemixVideo, Video, VideoPage};

/// The longest provider-requested delay the client waits out by itself before retrying a read;
/// a longer one is returned to the caller (as the error's `retry_after`) to schedule.
pub const MAX_INLINE_RETRY_WAIT: Duration = Duration::from_secs(60);

/// The public OpenAI API.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// How to reach the provider. Build it with [`OpenAiConfig::new`] and the `with_*` setters.
///
/// `Debug` never shows the API key (nor a password in the base URL).
#[derive(Clone)]
pub struct OpenAiConfig {
    /// The API root, ending before `/videos` (default `https://api.openai.com/v1`). Any
    /// OpenAI-compatible gateway works.
    pub base_url: Url,
    /// The bearer token.
    pub api_key: SecretString,
    /// Sent as `OpenAI-Organization` when set.
    pub organization: Option<String>,
    /// Sent as `OpenAI-Project` when set.
    pub project: Option<String>,
    /// How long to wait for a connection (default 10 s).
    pub connect_timeout: Duration,
    /// How long a whole API call may take, body included (default 60 s). For downloads it bounds
    /// the wait for the response headers only.
    pub request_timeout: Duration,
    /// How long a download may go without receiving a byte (default 30 s). A download has no
    /// total time limit: a large video on a slow link takes what it takes.
    pub download_read_timeout: Duration,
    /// How many times an idempotent read (retrieve, list, opening a download) is retried on a
    /// retryable error (default 2), waiting as `backoff` says. A provider that asks to wait longer
    /// than [`MAX_INLINE_RETRY_WAIT`] gets its error returned at once instead. Create, remix and
    /// delete are never retried by the client.
    pub read_retries: u32,
    /// The delay policy between read retries.
    pub backoff: Backoff,
}

impl OpenAiConfig {
    /// The defaults with this API key.
    pub fn new(api_key: impl Into<SecretString>) -> Self {
        Self {
            base_url: Url::parse(DEFAULT_BASE_URL)
                .unwrap_or_else(|_| unreachable!("the default base URL is valid")),
            api_key: api_key.into(),
            organization: None,
            project: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            download_read_timeout: Duration::from_secs(30),
            read_retries: 2,
            backoff: Backoff::default(),
        }
    }

    /// Sets the API root (for a gateway, an emulator or a test server).
    pub fn with_base_url(mut self, base_url: Url) -> Self {
        self.base_url = base_url;
        self
    }

    /// Sets the organization header.
    pub fn with_organization(mut self, organization: impl Into<String>) -> Self {
        self.organization = Some(organization.into());
        self
    }

    /// Sets the project header.
    pub fn with_project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// Sets the connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the timeout of a whole API call.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the longest silence allowed during a download.
    pub fn with_download_read_timeout(mut self, timeout: Duration) -> Self {
        self.download_read_timeout = timeout;
        self
    }

    /// Sets how many times an idempotent read is retried.
    pub fn with_read_retries(mut self, retries: u32) -> Self {
        self.read_retries = retries;
        self
    }

    /// Sets the delay policy between read retries.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

/// The URL with any password replaced, for `Debug`.
fn redacted_url(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        // Setting a password fails only for URLs that cannot have one, which had none.
        let _ = url.set_password(Some("***"));
    }
    url.to_string()
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &redacted_url(&self.base_url))
            .field("api_key", &"***")
            .field("organization", &self.organization)
            .field("project", &self.project)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("download_read_timeout", &self.download_read_timeout)
            .field("read_retries", &self.read_retries)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// Why a client cannot be built from a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The base URL is not an `http`/`https` URL that can have a path.
    #[error("the base URL must be an http or https URL: {0}")]
    InvalidBaseUrl(String),
    /// The API key is empty.
    #[error("the API key is empty")]
    EmptyApiKey,
    /// A value cannot be sent in an HTTP header (the value itself is not shown).
    #[error("the {0} contains characters that cannot be sent in an HTTP header")]
    InvalidHeader(&'static str),
    /// The HTTP client could not be built.
    #[error("the HTTP client could not be built: {0}")]
    Http(String),
}

/// A client of the OpenAI Videos API (or any gateway that speaks it).
///
/// Cheap to clone (the connection pool is shared). Never re-sends a create, a remix or a delete;
/// retries idempotent reads up to [`OpenAiConfig::read_retries`] times on retryable errors.
#[derive(Clone)]
pub struct OpenAiClient {
    http: reqwest::Client,
    base_url: Url,
    api_key: SecretString,
    request_timeout: Duration,
    read_retries: u32,
    backoff: Backoff,
}

impl fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("base_url", &redacted_url(&self.base_url))
            .field("request_timeout", &self.request_timeout)
            .field("read_retries", &self.read_retries)
            .finish_non_exhaustive()
    }
}

fn header_value(value: &str, what: &'static str) -> Result<HeaderValue, ConfigError> {
    HeaderValue::from_str(value).map_err(|_| ConfigError::InvalidHeader(what))
}

impl OpenAiClient {
    /// Builds a client. Fails on a base URL that is not http(s), an empty key, or header values
    /// that cannot be sent.
    pub fn new(config: OpenAiConfig) -> Result<Self, ConfigError> {
        let base_url = config.base_url;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.cannot_be_a_base() {
            return Err(ConfigError::InvalidBaseUrl(redacted_url(&base_url)));
        }
        let key = config.api_key.expose_secret();
        if key.trim().is_empty() {
            return Err(ConfigError::EmptyApiKey);
        }
        let mut headers = HeaderMap::new();
        let mut auth = header_value(&format!("Bearer {key}"), "API key")?;
        auth.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, auth);
        if let Some(org) = &config.organization {
            headers.insert("openai-organization", header_value(org, "organization")?);
        }
        if let Some(project) = &config.project {
            headers.insert("openai-project", header_value(project, "project")?);
        }
        // No client-wide total timeout: API calls set one per request, downloads rely on the
        // read timeout. Redirects are followed (up to 10); reqwest drops the Authorization
        // header when a redirect leaves the origin, so a CDN never sees the key.
        let http = reqwest::Client::builder()
            .user_agent(concat!("sora-openai/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.download_read_timeout)
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(|e| ConfigError::Http(e.without_url().to_string()))?;
        Ok(Self {
            http,
            base_url,
            api_key: config.api_key,
            request_timeout: config.request_timeout,
            read_retries: config.read_retries,
            backoff: config.backoff,
        })
    }

    /// The API root this client talks to.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.http.request(method, self.url(segments))
    }

    /// Replaces the API key wherever it appears in a provider-supplied text.
    fn redact(&self, text: &str) -> String {
        let key = self.api_key.expose_secret();
        if key.is_empty() {
            text.to_owned()
        } else {
            text.replace(key, "***")
        }
    }

    /// Sends an API call with the request timeout; returns the body of a successful answer and
    /// the request id.
    async fn send(
        &self,
        request: RequestBuilder,
    ) -> Result<(bytes::Bytes, Option<String>), ProviderError> {
        let response = request
            .header(header::ACCEPT, "application/json")
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let request_id = request_id(&headers);
        let body = response.bytes().await.map_err(transport_error)?;
        tracing::debug!(status = status.as_u16(), request_id, "provider answered");
        if !status.is_success() {
            return Err(self.classify(status, &headers, &body, false));
        }
        Ok((body, request_id))
    }

    /// Sends an API call and decodes its JSON answer.
    async fn call<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ProviderError> {
        let (body, request_id) = self.send(request).await?;
        decode(&body, request_id)
    }

    /// Runs an idempotent read, retrying retryable failures a bounded number of times.
    async fn retrying<T, F, Fut>(
        &self,
        operation: &'static str,
        mut op: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e)
                    if e.is_retryable()
                        && attempt < self.read_retries
                        && e.retry_after().is_none_or(|d| d <= MAX_INLINE_RETRY_WAIT) =>
                {
                    let delay = self.backoff.delay(attempt, e.retry_after());
                    tracing::warn!(
                        operation,
                        attempt,
                        error = %e,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "retrying a provider read"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Maps an unsuccessful answer to an error (see the table in [`crate::error`]).
    fn classify(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        on_content: bool,
    ) -> ProviderError {
        let detail = ErrorDetail::parse(body);
        let message = self.redact(&detail.message_or(status, body));
        classify(
            status,
            headers,
            detail,
            message,
            on_content,
            SystemTime::now(),
        )
    }

    async fn open_content(&self, id: &VideoId, variant: Variant) -> Result<Content, ProviderError> {
        let request = self
            .request(Method::GET, &["videos", id.as_str(), "content"])
            .query(&[("variant", variant.as_str())])
            .header(header::ACCEPT, "*/*");
        // Only the wait for the headers is bounded in total; the body is bounded by the read
        // timeout between chunks.
        let response = tokio::time::timeout(self.request_timeout, request.send())
            .await
            .map_err(|_| ProviderError::Timeout)?
            .map_err(transport_error)?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = tokio::time::timeout(self.request_timeout, response.bytes())
                .await
                .map_err(|_| ProviderError::Timeout)?
                .map_err(transport_error)?;
            return Err(self.classify(status, &headers, &body, true));
        }
        Ok(content_from(response))
    }
}

fn decode<T: DeserializeOwned>(
    body: &[u8],
    request_id: Option<String>,
) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|e| ProviderError::Decode {
        message: e.to_string(),
        request_id,
    })
}

fn content_from(response: Response) -> Content {
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_length = response.content_length();
    let stream = response.bytes_stream().map_err(transport_error).boxed();
    Content {
        content_type,
        content_length,
        stream,
    }
}

/// A transport failure: a timeout, or a connection that failed or broke.
fn transport_error(e: reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        return ProviderError::Timeout;
    }
    // The URL is left out: a base URL may carry credentials.
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    ProviderError::Connection { message }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    header_str(headers, "x-request-id")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The delay asked for by `retry-after-ms`, else `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = header_str(headers, "retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if let Ok(d) = Duration::try_from_secs_f64(ms / 1000.0) {
            return Some(d);
        }
    }
    let value = header_str(headers, "retry-after")?;
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn should_retry(headers: &HeaderMap) -> Option<bool> {
    match header_str(headers, "x-should-retry")? {
        v if v.eq_ignore_ascii_case("true") => Some(true),
        v if v.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// The parts of an error body `{"error":{"message","type","param","code"}}`, read tolerantly
/// (a bare string `error`, a top-level `message` or `detail`, numeric codes).
#[derive(Debug, Default)]
struct ErrorDetail {
    message: Option<String>,
    kind: Option<String>,
    param: Option<String>,
    code: Option<String>,
}

impl ErrorDetail {
    fn parse(body: &[u8]) -> Self {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Self::default();
        };
        let text = |v: Option<&serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        match value.get("error") {
            Some(serde_json::Value::Object(e)) => Self {
                message: text(e.get("message")),
                kind: text(e.get("type")),
                param: text(e.get("param")),
                code: text(e.get("code")),
            },
            Some(serde_json::Value::String(s)) => Self {
                message: Some(s.clone()),
                ..Self::default()
            },
            _ => Self {
                message: text(value.get("message")).or_else(|| text(value.get("detail"))),
                ..Self::default()
            },
        }
    }

    /// The provider's message, else the start of the body, else the status's reason.
    fn message_or(&self, status: StatusCode, body: &[u8]) -> String {
        if let Some(m) = self.message.as_ref().filter(|m| !m.trim().is_empty()) {
            return m.chars().take(MAX_MESSAGE_CHARS).collect();
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if !text.is_empty() {
            return text.chars().take(300).collect();
        }
        status.canonical_reason().unwrap_or("no message").to_owned()
    }

    fn says(&self, word: &str) -> bool {
        self.code.as_deref() == Some(word) || self.kind.as_deref() == Some(word)
    }
}

/// The longest provider message kept in an error.
const MAX_MESSAGE_CHARS: usize = 2000;

/// Whether a 404 message on `/content` means "the generation has not finished yet".
fn says_not_ready(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "not ready",
        "not completed",
        "not complete",
        "not finished",
        "not yet",
        "in progress",
        "in_progress",
        "still processing",
    ]
    .iter()
    .any(|w| m.contains(w))
}

fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    detail: ErrorDetail,
    message: String,
    on_content: bool,
    now: SystemTime,
) -> ProviderError {
    let request_id = request_id(headers);
    let retry_after = retry_after(headers, now);
    let code = status.as_u16();
    let error = match code {
        401 | 403 => ProviderError::Unauthorized {
            status: code,
            message,
            request_id,
        },
        404 if on_content && says_not_ready(&message) => ProviderError::ContentNotReady {
            message,
            request_id,
        },
        404 => ProviderError::NotFound {
            message,
            request_id,
        },
        409 if on_content => ProviderError::ContentNotReady {
            message,
            request_id,
        },
        429 if detail.says("insufficient_quota") => ProviderError::QuotaExhausted {
            message,
            request_id,
        },
        429 => ProviderError::RateLimited {
            retry_after,
            request_id,
        },
        408 | 409 => ProviderError::Upstream {
            status: code,
            message,
            retry_after,
            request_id,
        },
        400..=499 => ProviderError::InvalidRequest {
            code: detail.code,
            param: detail.param,
            message,
            request_id,
        },
        _ => ProviderError::Upstream {
            status: code,
            message,
            retry_after,
            request_id,
        },
    };
    apply_should_retry(error, code, should_retry(headers), retry_after)
}

/// Applies `x-should-retry` by choosing the variant (see the module documentation of
/// [`crate::error`]).
fn apply_should_retry(
    error: ProviderError,
    status: u16,
    should_retry: Option<bool>,
    retry_after: Option<Duration>,
) -> ProviderError {
    match should_retry {
        Some(true) if !error.is_retryable() => {
            let request_id = error.request_id().map(str::to_owned);
            let message = match &error {
                ProviderError::QuotaExhausted { message, .. }
                | ProviderError::InvalidRequest { message, .. }
                | ProviderError::Unauthorized { message, .. }
                | ProviderError::NotFound { message, .. }
                | ProviderError::ContentNotReady { message, .. }
                | ProviderError::Decode { message, .. } => message.clone(),
                _ => error.to_string(),
            };
            ProviderError::Upstream {
                status,
                message,
                retry_after,
                request_id,
            }
        }
        Some(false) if error.is_retryable() => match error {
            ProviderError::RateLimited { request_id, .. } => ProviderError::QuotaExhausted {
                message: "rate limited, and the provider asked not to retry".to_owned(),
                request_id,
            },
            ProviderError::Upstream {
                status,
                message,
                request_id,
                ..
            } => ProviderError::InvalidRequest {
                code: None,
                param: None,
                message: format!("{message} (HTTP {status}; the provider asked not to retry)"),
                request_id,
            },
            other => other,
        },
        _ => error,
    }
}

#[derive(Serialize)]
struct CreateJson<'a> {
    prompt: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seconds: Option<&'a str>,
}

#[derive(Serialize)]
struct ListParams<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<&'a str>,
}

#[async_trait::async_trait]
impl VideoProvider for OpenAiClient {
    async fn create(&self, request: CreateVideo) -> Result<Video, ProviderError> {
        let builder = self.request(Method::POST, &["videos"]);
        let builder = match request.input_reference {
            None => builder.json(&CreateJson {
                prompt: &request.prompt,
                model: request.model.as_deref(),
                size: request.size.as_deref(),
                seconds: request.seconds.as_deref(),
            }),
            Some(image) => {
                let mut form = reqwest::multipart::Form::new().text("prompt", request.prompt);
                for (name, value) in [
                    ("model", request.model),
                    ("size", request.size),
                    ("seconds", request.seconds),
                ] {
                    if let Some(value) = value {
                        form = form.text(name, value);
                    }
                }
                let part = reqwest::multipart::Part::bytes(image.data.to_vec())
                    .file_name(image.filename)
                    .mime_str(&image.content_type)
                    .map_err(|_| ProviderError::InvalidRequest {
                        code: None,
                        param: Some("input_reference".to_owned()),
                        message: format!("`{}` is not a valid media type", image.content_type),
                        request_id: None,
                    })?;
                builder.multipart(form.part("input_reference", part))
            }
        };
        // Never retried: a create that timed out may have succeeded.
        self.call(builder).await
    }

    async fn retrieve(&self, id: &VideoId) -> Result<Video, ProviderError> {
        self.retrying("retrieve", || {
            self.call(self.request(Method::GET, &["videos", id.as_str()]))
        })
        .await
    }

    async fn list(&self, query: ListQuery) -> Result<VideoPage, ProviderError> {
        let params = ListParams {
            limit: query.limit,
            order: query.order.map(|o| o.as_str()),
            after: query.after.as_deref(),
        };
        self.retrying("list", || {
            self.call(self.request(Method::GET, &["videos"]).query(&params))
        })
        .await
    }

    async fn delete(&self, id: &VideoId) -> Result<DeletedVideo, ProviderError> {
        let (body, request_id) = self
            .send(self.request(Method::DELETE, &["videos", id.as_str()]))
            .await?;
        // Some gateways answer a delete with an empty 200 or 204.
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(DeletedVideo {
                id: id.as_str().to_owned(),
                deleted: true,
            });
        }
        decode(&body, request_id)
    }

    async fn remix(&self, id: &VideoId, request: RemixVideo) -> Result<Video, ProviderError> {
        self.call(
            self.request(Method::POST, &["videos", id.as_str(), "remix"])
                .json(&request),
        )
        .await
    }

    async fn download(&self, id: &VideoId, variant: Variant) -> Result<Content, ProviderError> {
        self.retrying("download", || self.open_content(id, variant))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retry_after_reads_milliseconds_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            retry_after(
                &headers(&[("retry-after-ms", "1500"), ("retry-after", "9")]),
                now
            ),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &date)]), now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &past)]), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-1")]), now), None);
    }

    #[test]
    fn should_retry_false_makes_a_server_error_permanent() {
        let e = classify(
            StatusCode::SERVICE_UNAVAILABLE,
            &headers(&[("x-should-retry", "false")]),
            ErrorDetail::default(),
            "down".into(),
            false,
            SystemTime::now(),
        );
        assert!(!e.is_retryable(), "{e:?}");
        assert!(e.to_string().contains("asked not to retry"));
    }

    #[test]
    fn should_retry_true_makes_a_client_error_retryable() {
        let e = classify(
            StatusCode::BAD_REQUEST,
            &headers(&[("x-should-retry", "true"), ("x-request-id", "req_9")]),
            ErrorDetail::default(),
            "odd".into(),
            false,
            SystemTime::now(),
        );
        assert!(e.is_retryable());
        assert_eq!(e.request_id(), Some("req_9"));
    }

    #[test]
    fn config_debug_hides_the_key_and_url_password() {
        let config = OpenAiConfig::new("sk-very-secret")
            .with_base_url(Url::parse("https://user:hunter2@gw.example/v1").unwrap());
        let debug = format!("{config:?}");
        assert!(!debug.contains("sk-very-secret"));
        assert!(!debug.contains("hunter2"));
        let client = OpenAiClient::new(config).unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains("sk-very-secret"));
        assert!(!debug.contains("hunter2"));
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert_eq!(
            OpenAiClient::new(OpenAiConfig::new("")).unwrap_err(),
            ConfigError::EmptyApiKey
        );
        assert!(matches!(
            OpenAiClient::new(
                OpenAiConfig::new("k").with_base_url(Url::parse("ftp://x/").unwrap())
            ),
            Err(ConfigError::InvalidBaseUrl(_))
        ));
        assert_eq!(
            OpenAiClient::new(OpenAiConfig::new("k\nx")).unwrap_err(),
            ConfigError::InvalidHeader("API key")
        );
    }

    #[test]
    fn paths_are_appended_to_the_base_url() {
        let client = OpenAiClient::new(
            OpenAiConfig::new("k").with_base_url(Url::parse("http://127.0.0.1:9/gw/v1/").unwrap()),
        )
        .unwrap();
        assert_eq!(
            client.url(&["videos", "video_1", "content"]).as_str(),
            "http://127.0.0.1:9/gw/v1/videos/video_1/content"
        );
    }
}
