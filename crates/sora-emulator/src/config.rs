//! The emulator's configuration: where it listens, how jobs behave, where webhooks go, and the
//! faults it injects into every job.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use secrecy::SecretString;
use sora_openai::webhook::WebhookSecret;
use url::Url;

/// The allowed `seconds` values by default (the published `sora-2` schema).
pub const DEFAULT_SECONDS: [&str; 3] = ["4", "8", "12"];

/// The allowed `size` values by default (the published `sora-2` schema).
pub const DEFAULT_SIZES: [&str; 4] = ["720x1280", "1280x720", "1024x1792", "1792x1024"];

/// How the emulator behaves. Start from [`EmulatorConfig::default`] and change what you need:
///
/// ```
/// use std::time::Duration;
/// use sora_emulator::EmulatorConfig;
///
/// let config = EmulatorConfig {
///     generation_duration: Duration::from_millis(300),
///     tick_interval: Duration::from_millis(20),
///     ..EmulatorConfig::default()
/// };
/// assert_eq!(config.bind.ip().to_string(), "127.0.0.1");
/// ```
#[derive(Clone)]
pub struct EmulatorConfig {
    /// The address to listen on. Default `127.0.0.1:0`: an ephemeral loopback port (read the
    /// real one with `EmulatorHandle::base_url`).
    pub bind: SocketAddr,
    /// When set, only `Authorization: Bearer <this key>` is accepted; when unset (the default)
    /// any non-empty bearer token is.
    pub api_key: Option<SecretString>,
    /// Where `video.completed` / `video.failed` webhooks go. Default: none (no webhooks).
    pub webhook: Option<WebhookTarget>,
    /// How long a generation takes from create to `completed`. Default 5 s. The first tenth of it
    /// the job is `queued`, the rest `in_progress` with `progress` rising from 0 to 99.
    pub generation_duration: Duration,
    /// How often the background ticker moves jobs forward (and sends their webhooks) when nobody
    /// reads them. Reads always see the exact state. Default 250 ms.
    pub tick_interval: Duration,
    /// How long the files of a completed job stay downloadable (`expires_at - completed_at`).
    /// Default 1 hour, like the real API.
    pub content_ttl: Duration,
    /// The model used when a create request names none. Default `sora-2`.
    pub default_model: String,
    /// The accepted `seconds` strings; the first one is the default. Default `"4"`, `"8"`, `"12"`.
    pub allowed_seconds: Vec<String>,
    /// The accepted `size` strings; the first one is the default. Default `720x1280`,
    /// `1280x720`, `1024x1792`, `1792x1024`.
    pub allowed_sizes: Vec<String>,
    /// The delay announced in `Retry-After` (whole seconds, rounded up) and `retry-after-ms` on
    /// an injected 429 or 503. Default 1 s.
    pub retry_after: Duration,
    /// How webhooks are retried.
    pub webhook_retry: WebhookRetry,
    /// Faults injected into every request and job (prompt markers add to them).
    pub faults: Faults,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            api_key: None,
            webhook: None,
            generation_duration: Duration::from_secs(5),
            tick_interval: Duration::from_millis(250),
            content_ttl: Duration::from_secs(3600),
            default_model: "sora-2".to_owned(),
            allowed_seconds: DEFAULT_SECONDS.iter().map(|s| (*s).to_owned()).collect(),
            allowed_sizes: DEFAULT_SIZES.iter().map(|s| (*s).to_owned()).collect(),
            retry_after: Duration::from_secs(1),
            webhook_retry: WebhookRetry::default(),
            faults: Faults::default(),
        }
    }
}

impl fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("bind", &self.bind)
            .field("api_key", &self.api_key.as_ref().map(|_| "[REDACTED]"))
            .field("webhook", &self.webhook)
            .field("generation_duration", &self.generation_duration)
            .field("tick_interval", &self.tick_interval)
            .field("content_ttl", &self.content_ttl)
            .field("default_model", &self.default_model)
            .field("allowed_seconds", &self.allowed_seconds)
            .field("allowed_sizes", &self.allowed_sizes)
            .field("retry_after", &self.retry_after)
            .field("webhook_retry", &self.webhook_retry)
            .field("faults", &self.faults)
            .finish()
    }
}

impl EmulatorConfig {
    /// Checks the settings that could make the emulator misbehave: empty lists, a zero tick, a
    /// drop share outside `0..=1`, a 5xx fault status that is not 5xx.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.allowed_seconds.is_empty() {
            return Err(ConfigError("allowed_seconds must not be empty".into()));
        }
        if self.allowed_sizes.is_empty() {
            return Err(ConfigError("allowed_sizes must not be empty".into()));
        }
        if self.default_model.trim().is_empty() {
            return Err(ConfigError("default_model must not be empty".into()));
        }
        if self.tick_interval.is_zero() {
            return Err(ConfigError("tick_interval must be positive".into()));
        }
        if self.webhook_retry.max_attempts == 0 {
            return Err(ConfigError(
                "webhook_retry.max_attempts must be at least 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.faults.webhook_drop_share) {
            return Err(ConfigError(
                "faults.webhook_drop_share must be between 0 and 1".into(),
            ));
        }
        if !(500..=599).contains(&self.faults.server_error_status) {
            return Err(ConfigError(
                "faults.server_error_status must be a 5xx status".into(),
            ));
        }
        Ok(())
    }
}

/// A configuration the emulator refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid emulator configuration: {0}")]
pub struct ConfigError(pub String);

/// Where webhooks are delivered and the secret that signs them.
#[derive(Clone)]
pub struct WebhookTarget {
    /// The receiver's URL; each event is POSTed to it.
    pub url: Url,
    /// The Standard Webhooks secret (`whsec_...`) that signs every delivery.
    pub secret: WebhookSecret,
}

impl fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url.as_str())
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// How webhook deliveries are retried: a delivery that answers non-2xx, answers too slowly or
/// cannot connect is tried again after `initial_backoff`, then twice that, and so on, at most
/// `max_attempts` times in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRetry {
    /// Attempts per delivery, the first included. Default 5.
    pub max_attempts: u32,
    /// The wait before the second attempt; it doubles after each failure. Default 1 s.
    pub initial_backoff: Duration,
    /// How long one attempt may take before it counts as failed. Default 5 s.
    pub timeout: Duration,
}

impl Default for WebhookRetry {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Faults applied to every request and job. Each has a per-job prompt marker too (see the crate
/// documentation); a job gets the union of both. All default to "off".
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Answer the first N create (and remix) requests with `429` and `Retry-After`.
    pub rate_limit_creates: u32,
    /// Then answer the next N create (and remix) requests with `server_error_status`.
    pub server_error_creates: u32,
    /// The status of the injected server errors: 500 (default), 502, 503 or 504.
    pub server_error_status: u16,
    /// Delay every answer by this much.
    pub response_delay: Duration,
    /// Fail every generation halfway with this error code (e.g. `moderation_blocked`).
    pub fail_generation: Option<String>,
    /// Keep every job `in_progress` forever (progress stops at 99).
    pub stall: bool,
    /// Expire the content at the moment of completion, so `/content` answers 404 "expired".
    pub expire_early: bool,
    /// The share (0.0 to 1.0) of webhooks silently never sent.
    pub webhook_drop_share: f64,
    /// Send each webhook this many times in all, with the same `webhook-id` (0 and 1 mean once).
    pub webhook_copies: u32,
    /// Wait this long after the job ends before sending its webhook.
    pub webhook_delay: Duration,
    /// After each webhook, also send a stale one of the opposite type (see the crate docs).
    pub webhook_out_of_order: bool,
    /// Send each job's webhook as soon as it starts `in_progress`, before retrieve says it ended.
    pub webhook_early: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate_limit_creates: 0,
            server_error_creates: 0,
            server_error_status: 500,
            response_delay: Duration::ZERO,
            fail_generation: None,
            stall: false,
            expire_early: false,
            webhook_drop_share: 0.0,
            webhook_copies: 1,
            webhook_delay: Duration::ZERO,
            webhook_out_of_order: false,
            webhook_early: false,
        }
    }
}
