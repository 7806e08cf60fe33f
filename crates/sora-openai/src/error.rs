//! The provider error taxonomy: what went wrong, in terms a worker can act on.
//!
//! How an HTTP answer is classified (see `OpenAiClient`):
//!
//! | answer | variant |
//! | --- | --- |
//! | 400, 422 and other 4xx not listed below | [`ProviderError::InvalidRequest`] |
//! | 401, 403 | [`ProviderError::Unauthorized`] |
//! | 404 on `/content` whose message says "not ready" / "not completed" / "in progress" | [`ProviderError::ContentNotReady`] |
//! | any other 404 | [`ProviderError::NotFound`] |
//! | 409 on `/content` | [`ProviderError::ContentNotReady`] |
//! | 429 whose `code` or `type` is `insufficient_quota` | [`ProviderError::QuotaExhausted`] |
//! | other 429 | [`ProviderError::RateLimited`] |
//! | 408, other 409, 5xx, anything else | [`ProviderError::Upstream`] |
//!
//! The `x-should-retry` header overrides retryability, and it is applied when the error is built
//! so that each variant keeps one meaning: `true` on an answer that would not be retried turns it
//! into [`ProviderError::Upstream`] (retryable); `false` on a 429 turns it into
//! [`ProviderError::QuotaExhausted`], and `false` on a 408, 409 or 5xx into
//! [`ProviderError::InvalidRequest`] whose message says the provider asked not to retry.

use std::time::Duration;

use sora_core::{FailureCode, JobError};

/// Why a provider call failed. Messages come from the provider or the transport and never
/// contain the API key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Too many requests for now (429); retry after the delay.
    #[error("rate limited by the provider{}", fmt_retry(retry_after))]
    RateLimited {
        /// The delay the provider asked for, if it gave one.
        retry_after: Option<Duration>,
        /// The provider's `x-request-id`.
        request_id: Option<String>,
    },
    /// The account's quota or billing limit is exhausted (429 `insufficient_quota`): not
    /// retryable.
    #[error("the provider quota is exhausted: {message}")]
    QuotaExhausted {
        /// The provider's message.
        message: String,
        /// The provider's `x-request-id`.
        request_id: Option<String>,
    },
    /// The provider refused the request as invalid (400, 422...).
    #[error("the provider refused the request{}: {message}", fmt_param(param))]
    InvalidRequest {
        /// The provider's error code, if any.
        code: Option<String>,
        /// The parameter at fault, if the provider named one.
        param: Option<String>,
        /// The provider's message.
        message: String,
        /// The provider's `x-request-id`.
        request_id: Option<String>,
    },
    /// The key is wrong or lacks permission (401, 403).
    #[error("the provider refused the credentials (HTTP {status}): {message}")]
    Unauthorized {
        /// The HTTP status, 401 or 403.
        status: u16,
        /// The provider's message.
        message: String,
        /// The provider's `x-request-id`.
        request_id: Option<String>,
    },
    /// No such video (404).
    #[error("not found at the provider: {message}")]
    NotFound {
        /// The provider's message.
        message: String,
        /// The provider's `x-request-id`.
        request_id: Option<String>,
    },
    /// The files cannot be downloaded yet because the generation has not finished.
    #[error("the content is not ready: {message}")]
    ContentNotReady {
        /// The provider's message.
        message: String,
        /// The provider's `x-request-id`.
        request_id: Option<String>,
    },
    /// The provider failed (5xx, 408, 409): retryable.
    #[error(
        "the provider failed (HTTP {status}){}: {message}",
        fmt_retry(retry_after)
    )]
    Upstream {
        /// The HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
        /// The delay the provider asked for, if it gave one.
        retry_after: Option<Duration>,
        /// The provider's `x-request-id`.
        request_id: Option<String>,
    },
    /// No answer in time.
    #[error("the provider did not answer in time")]
    Timeout,
    /// The connection failed or broke.
    #[error("could not reach the provider: {message}")]
    Connection {
        /// What the transport said.
        message: String,
    },
    /// The answer could not be decoded.
    #[error("the provider's answer could not be decoded: {message}")]
    Decode {
        /// What was wrong with it.
        message: String,
        /// The provider's `x-request-id`.
        request_id: Option<String>,
    },
}

fn fmt_retry(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(" (retry after {} ms)", d.as_millis()),
        None => String::new(),
    }
}

fn fmt_param(param: &Option<String>) -> String {
    match param {
        Some(p) => format!(" (parameter `{p}`)"),
        None => String::new(),
    }
}

impl ProviderError {
    /// Whether trying the same call again later may succeed: rate limits, upstream failures,
    /// timeouts and connection failures. (`x-should-retry` was already applied when the error
    /// was built; see the module documentation.)
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. }
            | Self::Upstream { .. }
            | Self::Timeout
            | Self::Connection { .. } => true,
            Self::QuotaExhausted { .. }
            | Self::InvalidRequest { .. }
            | Self::Unauthorized { .. }
            | Self::NotFound { .. }
            | Self::ContentNotReady { .. }
            | Self::Decode { .. } => false,
        }
    }

    /// The delay the provider asked for before a retry, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::Upstream { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The provider's `x-request-id` of the failed call, for support requests.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::RateLimited { request_id, .. }
            | Self::QuotaExhausted { request_id, .. }
            | Self::InvalidRequest { request_id, .. }
            | Self::Unauthorized { request_id, .. }
            | Self::NotFound { request_id, .. }
            | Self::ContentNotReady { request_id, .. }
            | Self::Upstream { request_id, .. }
            | Self::Decode { request_id, .. } => request_id.as_deref(),
            Self::Timeout | Self::Connection { .. } => None,
        }
    }

    /// A stable machine-readable name of the variant (`rate_limited`, `quota_exhausted`,
    /// `invalid_request`, `unauthorized`, `not_found`, `content_not_ready`, `upstream`,
    /// `timeout`, `connection`, `decode`), for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::QuotaExhausted { .. } => "quota_exhausted",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::Unauthorized { .. } => "unauthorized",
            Self::NotFound { .. } => "not_found",
            Self::ContentNotReady { .. } => "content_not_ready",
            Self::Upstream { .. } => "upstream",
            Self::Timeout => "timeout",
            Self::Connection { .. } => "connection",
            Self::Decode { .. } => "decode",
        }
    }

    /// The reason to give a job that fails permanently because of this error:
    /// an invalid request is [`FailureCode::InvalidRequest`] (or [`FailureCode::ContentPolicy`]
    /// when the provider's code speaks of moderation or policy), an exhausted quota is
    /// [`FailureCode::QuotaExhausted`], and everything else is [`FailureCode::ProviderError`].
    /// The message is this error's display, which includes the provider's message.
    pub fn to_job_error(&self) -> JobError {
        let code = match self {
            Self::InvalidRequest { code, .. } => {
                match FailureCode::from_provider_code(code.as_deref()) {
                    FailureCode::ContentPolicy => FailureCode::ContentPolicy,
                    _ => FailureCode::InvalidRequest,
                }
            }
            Self::QuotaExhausted { .. } => FailureCode::QuotaExhausted,
            _ => FailureCode::ProviderError,
        };
        JobError::new(code, self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_variants_are_exactly_the_transient_ones() {
        let upstream = ProviderError::Upstream {
            status: 503,
            message: "busy".into(),
            retry_after: Some(Duration::from_secs(2)),
            request_id: Some("req_1".into()),
        };
        assert!(upstream.is_retryable());
        assert_eq!(upstream.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(upstream.request_id(), Some("req_1"));
        assert_eq!(upstream.code(), "upstream");
        assert!(ProviderError::Timeout.is_retryable());
        assert!(
            !ProviderError::QuotaExhausted {
                message: "m".into(),
                request_id: None
            }
            .is_retryable()
        );
        assert!(
            !ProviderError::ContentNotReady {
                message: "m".into(),
                request_id: None
            }
            .is_retryable()
        );
    }

    #[test]
    fn job_errors_use_the_matching_failure_code() {
        let e = ProviderError::InvalidRequest {
            code: Some("moderation_blocked".into()),
            param: None,
            message: "refused".into(),
            request_id: None,
        };
        let je = e.to_job_error();
        assert_eq!(je.code, FailureCode::ContentPolicy);
        assert!(je.message.contains("refused"));
        let e = ProviderError::InvalidRequest {
            code: Some("invalid_value".into()),
            param: Some("size".into()),
            message: "bad size".into(),
            request_id: None,
        };
        assert_eq!(e.to_job_error().code, FailureCode::InvalidRequest);
        assert!(e.to_string().contains("`size`"));
        let e = ProviderError::QuotaExhausted {
            message: "pay up".into(),
            request_id: None,
        };
        assert_eq!(e.to_job_error().code, FailureCode::QuotaExhausted);
        assert_eq!(
            ProviderError::Timeout.to_job_error().code,
            FailureCode::ProviderError
        );
    }
}
